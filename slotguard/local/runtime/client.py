"""A client for the runtime's own endpoints (stats, freeze), for the storm and status commands.

Invocations go through boto3's Lambda client like any Lambda; these two calls have no Lambda
equivalent, so they are plain JSON over HTTP on the same port.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from slotguard.local.runtime.server import STATS_PATH


class RuntimeAdminError(RuntimeError):
    """The runtime refused or could not be reached."""


class RuntimeAdminClient:
    def __init__(self, endpoint_url: str, timeout_s: float = 120.0) -> None:
        if not endpoint_url.startswith("http://"):
            raise ValueError(f"endpoint_url must be http://host:port, got {endpoint_url!r}")
        self.endpoint_url = endpoint_url.rstrip("/")
        self.timeout_s = timeout_s

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per function: busy, idle, frozen, instances, cold_starts, throttles, invocations..."""
        result: dict[str, dict[str, Any]] = self._call("GET", STATS_PATH, None)
        return result

    def freeze(
        self, name: str, count: int, payload: Any = None, *, fresh: bool = False
    ) -> dict[str, Any]:
        """Leave `count` instances of `name` frozen after one invocation each with `payload`.

        `fresh`: cold-start `count` new instances instead of reusing idle ones first.
        """
        path = f"/slotguard/runtime/functions/{name}/freeze"
        document = {"count": count, "payload": payload, "fresh": fresh}
        result: dict[str, Any] = self._call("POST", path, document)
        return result

    def _call(self, method: str, path: str, document: Any) -> Any:
        data = None if document is None else json.dumps(document).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL scheme is checked to be http
            self.endpoint_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise RuntimeAdminError(f"{method} {path}: HTTP {exc.code}: {detail}") from exc
        except urllib.error.URLError as exc:
            raise RuntimeAdminError(
                f"cannot reach the local runtime at {self.endpoint_url}: {exc.reason}"
            ) from exc
