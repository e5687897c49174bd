"""Write the API's OpenAPI description to `functions/openapi.json`: `python -m functions.openapi`.

The committed file is what reviewers and client generators read; a test fails when it is stale.
"""

from __future__ import annotations

from pathlib import Path

from .api import openapi_json

OPENAPI_PATH = Path(__file__).with_name("openapi.json")


def write(path: Path = OPENAPI_PATH) -> bool:
    """Write the description; True when the file changed."""
    text = openapi_json()
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


if __name__ == "__main__":
    print(("wrote " if write() else "unchanged ") + str(OPENAPI_PATH))
