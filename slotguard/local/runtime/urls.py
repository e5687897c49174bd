"""A Function URL front for the local runtime: plain HTTP in, payload 2.0 event, HTTP out.

`http://127.0.0.1:PORT/urls/<function>/<path>?<query>` becomes the event a Lambda Function URL
sends (`version` 2.0, `rawPath`, `rawQueryString`, lower-cased `headers` with repeated values
joined by commas, `cookies`, a text or base64 `body`), and the handler's answer becomes the HTTP
response the way Function URLs map it: a dict with `statusCode` is taken field by field; any other
value is a 200 JSON body; a function error or a timeout is a 502, a throttle a 429. It lets
HTTP tools (schemathesis, curl) exercise a handler through the same runtime the storms use.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

URL_PREFIX = "/urls/"


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def split_url_path(path: str) -> tuple[str, str] | None:
    """`/urls/<function>/<rest>` -> (function, "/<rest>"), or None for other paths."""
    if not path.startswith(URL_PREFIX):
        return None
    function, _, rest = path[len(URL_PREFIX) :].partition("/")
    if not function:
        return None
    return urllib.parse.unquote(function), "/" + rest


def _is_text(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return (
        kind.startswith("text/")
        or kind in {"application/json", "application/xml", "application/x-www-form-urlencoded"}
        or kind.endswith("+json")
        or kind.endswith("+xml")
    )


def request_event(
    *,
    method: str,
    path: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    source_ip: str = "127.0.0.1",
    domain: str = "localhost",
) -> dict[str, Any]:
    """The payload 2.0 event a Function URL would send for this request."""
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    params: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        params[name] = f"{params[name]},{value}" if name in params else value
    text_body = _is_text(joined.get("content-type", "")) or not body
    if text_body:
        try:
            body_text, encoded = body.decode("utf-8"), False
        except UnicodeDecodeError:
            body_text, encoded = base64.b64encode(body).decode(), True
    else:
        body_text, encoded = base64.b64encode(body).decode(), True
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": joined,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "local",
            "domainName": domain,
            "domainPrefix": domain.split(".", 1)[0],
            "http": {
                "method": method.upper(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": joined.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": encoded,
    }
    if cookies:
        event["cookies"] = cookies
    if params:
        event["queryStringParameters"] = params
    if body:
        event["body"] = body_text
    return event


def _problem(status: int, message: str) -> HttpAnswer:
    body = json.dumps({"Message": message}).encode()
    return HttpAnswer(status, [("Content-Type", "application/json")], body)


def throttled() -> HttpAnswer:
    return _problem(429, "Rate Exceeded.")


def response_from_result(result: bytes, function_error: bool) -> HttpAnswer:
    """The HTTP response a Function URL makes of a handler's return value."""
    if function_error:
        return _problem(502, "Internal Server Error")
    try:
        document = json.loads(result or b"null")
    except ValueError:
        return _problem(502, "Internal Server Error")
    if not (isinstance(document, dict) and "statusCode" in document):
        # Lambda infers the response: the returned value is the JSON body of a 200.
        body = json.dumps(document).encode()
        return HttpAnswer(200, [("Content-Type", "application/json")], body)
    try:
        status = int(document["statusCode"])
    except (TypeError, ValueError):
        return _problem(502, "Internal Server Error")
    headers = [(str(k), str(v)) for k, v in (document.get("headers") or {}).items()]
    for name, values in (document.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(v)) for v in values)
    headers.extend(("Set-Cookie", str(cookie)) for cookie in document.get("cookies") or [])
    raw = document.get("body")
    if raw is None:
        payload = b""
    elif document.get("isBase64Encoded"):
        payload = base64.b64decode(str(raw))
    else:
        payload = (raw if isinstance(raw, str) else json.dumps(raw)).encode("utf-8", "replace")
    if not any(name.lower() == "content-type" for name, _ in headers) and payload:
        headers.append(("Content-Type", "application/json"))
    return HttpAnswer(status, headers, payload)
