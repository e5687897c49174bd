"""Checks against the AWS account: before `pulumi up` (preflight) and after it (verify)."""
