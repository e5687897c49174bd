"""A storm probe function: holds a pooled (or direct) connection for a chosen query duration.

The example API answers in a few milliseconds; to see what a burst of *slow* requests does to the
pool, the storm needs a handler whose query lasts `query_ms`. It goes through the same connection
helper as every handler (loaded as this instance's own copy), so retries, classification and the
kept connection behave exactly as in the API.
"""
