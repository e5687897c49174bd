"""The Lambda Invoke HTTP API on loopback, so boto3's Lambda client works with `endpoint_url`.

Server choice: the standard library's `ThreadingHTTPServer`, one thread per client connection,
with a listen backlog of 4096. A storm opens one keep-alive connection per concurrent caller and
each waits for its invocation to finish (milliseconds to seconds of database time), so the server
spends its life *waiting*, not computing: ~1,000 mostly blocked threads cost little on 2 cores,
while the large backlog keeps a burst of simultaneous connects from being refused before the
accept loop catches up. The handlers themselves run in the worker processes, not here.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse
import uuid
from collections.abc import Iterable
from concurrent.futures import TimeoutError as FutureTimeoutError
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from slotguard.local.runtime.configuration import (
    BadParameterError,
    Registered,
    function_configuration,
    get_function,
    list_functions,
)
from slotguard.local.runtime.logs import tail
from slotguard.local.runtime.protocol import (
    FREEZE,
    INVOKE,
    FreezeOutcome,
    FreezeRequest,
    FunctionStats,
    Invocation,
    Outcome,
    runtime_error_body,
)
from slotguard.local.runtime.spec import FunctionSpec, RuntimeSettings
from slotguard.local.runtime.supervisor import WorkerGoneError, WorkerHandle
from slotguard.local.runtime.urls import (
    HttpAnswer,
    request_event,
    response_from_result,
    split_url_path,
    throttled,
)

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")
FREEZE_PATH = re.compile(r"^/slotguard/runtime/functions/(?P<name>[^/]+)/freeze$")
STATS_PATH = "/slotguard/runtime/stats"
# ListFunctions, GetFunction, GetFunctionConfiguration (botocore's service-2.json requestUri).
LIST_PATHS = {"/2015-03-31/functions", "/2015-03-31/functions/"}
FUNCTION_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)$")
CONFIGURATION_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/configuration$")
LISTEN_BACKLOG = 4096
# Lambda's synchronous invocation limit, for the request and for the response.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# Beyond the function timeout, how long the front waits for a worker before giving up on it.
WORKER_GRACE_S = 30.0


class _Server(ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True
    block_on_close = False
    runtime: LocalRuntime


class LocalRuntime:
    """Serves a set of functions; `start()` spawns one worker process per function."""

    def __init__(
        self,
        functions: Iterable[FunctionSpec],
        settings: RuntimeSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.settings = settings or RuntimeSettings()
        self._workers: dict[str, WorkerHandle] = {}
        self._registered: dict[str, Registered] = {}
        self._lock = threading.Lock()
        for spec in functions:
            if spec.name in self._workers:
                raise ValueError(f"function {spec.name!r} is registered twice")
            self._workers[spec.name] = WorkerHandle(spec, self.settings)
            self._registered[spec.name] = self._describe(spec)
        self._server = _Server((host, port), _InvokeHandler)
        self._server.runtime = self
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> LocalRuntime:
        # Spawn every worker before waiting for any: their start-up (an interpreter each) overlaps.
        eager = [w for w in self._workers.values() if not w.spec.lazy]
        for worker in eager:
            worker.spawn()
        for worker in eager:
            worker.wait_ready()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="lambda-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for worker in self._workers.values():
            worker.stop()

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def register(self, spec: FunctionSpec) -> None:
        """Add (or replace) a function while serving; its worker starts now."""
        worker = WorkerHandle(spec, self.settings)
        worker.start()
        with self._lock:
            old = self._workers.get(spec.name)
            self._workers[spec.name] = worker
            self._registered[spec.name] = self._describe(spec)
        if old is not None:
            old.stop()

    def _describe(self, spec: FunctionSpec) -> Registered:
        return Registered(spec, self.settings, datetime.now(UTC), str(uuid.uuid4()))

    def registered(self, name: str | None = None) -> list[Registered]:
        """The served functions as the Lambda API describes them (one, by name, or all)."""
        with self._lock:
            if name is None:
                return list(self._registered.values())
            found = self._registered.get(name)
        if found is None:
            raise FunctionNotFoundError(self.settings.function_arn(name))
        return [found]

    def worker(self, name: str) -> WorkerHandle | None:
        with self._lock:
            return self._workers.get(name)

    @property
    def function_names(self) -> list[str]:
        with self._lock:
            return sorted(self._workers)

    # -- operations ----------------------------------------------------------------------------

    def invoke(self, name: str, invocation: Invocation) -> Outcome | None:
        """Run one invocation; None when reserved concurrency is exhausted (a throttle)."""
        worker = self._require(name)
        try:
            worker.ensure_running()
        except WorkerGoneError as exc:
            return _exit_error(exc)
        if not worker.try_acquire():
            return None
        try:
            future = worker.request(INVOKE, invocation)
            try:
                outcome: Outcome = future.result(worker.spec.timeout_s + WORKER_GRACE_S)
            except (WorkerGoneError, FutureTimeoutError) as exc:
                return _exit_error(exc)
            return outcome
        finally:
            worker.release()

    def freeze(
        self, name: str, count: int, payload: Any = None, *, fresh: bool = False
    ) -> FreezeOutcome:
        """Invoke `count` instances at once with `payload`, then freeze them, holding their state.

        This is how a storm leaves instances holding idle connections on purpose.
        """
        worker = self._require(name)
        worker.ensure_running()
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        limit = worker.spec.reserved_concurrency
        if not worker.try_acquire(count):
            raise ValueError(
                f"cannot freeze {count} instances of {name!r}: its reserved concurrency is "
                f"{limit}; lower the count or raise reserved_concurrency"
            )
        try:
            body = json.dumps({} if payload is None else payload).encode()
            request = FreezeRequest(count, body, fresh)
            outcome: FreezeOutcome = worker.request(FREEZE, request).result(
                worker.spec.timeout_s + WORKER_GRACE_S
            )
            return outcome
        finally:
            worker.release(count)

    def stats(self) -> dict[str, FunctionStats]:
        """Per function: instances busy, idle and frozen, cold starts, throttles, invocations."""
        with self._lock:
            workers = dict(self._workers)
        return {name: worker.stats() for name, worker in sorted(workers.items())}

    def _require(self, name: str) -> WorkerHandle:
        worker = self.worker(name)
        if worker is None:
            raise FunctionNotFoundError(self.settings.function_arn(name))
        return worker


def _within_response_limit(outcome: Outcome) -> Outcome:
    if len(outcome.body) <= MAX_PAYLOAD_BYTES:
        return outcome
    return Outcome(
        body=runtime_error_body(
            "Function.ResponseSizeTooLarge",
            f"Response payload size ({len(outcome.body)} bytes) exceeded maximum allowed "
            f"payload size ({MAX_PAYLOAD_BYTES} bytes).",
            outcome.request_id,
        ),
        function_error=True,
        request_id=outcome.request_id,
        log=outcome.log,
    )


def _exit_error(exc: BaseException) -> Outcome:
    """Lambda's answer when the sandbox itself died under an invocation."""
    request_id = str(uuid.uuid4())
    return Outcome(
        body=runtime_error_body("Runtime.ExitError", str(exc) or type(exc).__name__, request_id),
        function_error=True,
        request_id=request_id,
    )


class FunctionNotFoundError(LookupError):
    """No function of that name is registered."""


def function_name(path_segment: str) -> str:
    """The function name from a name, a partial or a full ARN, dropping a version qualifier."""
    name = urllib.parse.unquote(path_segment)
    if name.startswith("arn:") or ":function:" in name:
        name = name.split(":function:", 1)[-1]
    return name.split(":", 1)[0]


def _qualifier(path_segment: str) -> str | None:
    """The version or alias a name or ARN carries after the function name, if any."""
    name = urllib.parse.unquote(path_segment)
    if name.startswith("arn:") or ":function:" in name:
        name = name.split(":function:", 1)[-1]
    _, _, qualifier = name.partition(":")
    return qualifier or None


class _InvokeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: boto3 reuses its pooled connections
    # Headers and body leave in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms per invocation on loopback).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return  # a storm would print a line per invocation

    # -- routing -------------------------------------------------------------------------------

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if split_url_path(path) is not None:
            self._function_url("POST", body)
            return
        try:
            if match := INVOKE_PATH.match(path):
                self._invoke(function_name(match["name"]), body)
            elif match := FREEZE_PATH.match(path):
                self._freeze(match["name"], body)
            else:
                self._error(HTTPStatus.NOT_FOUND, "UnknownOperationException", f"no route {path}")
        except Exception as exc:
            # A fault of the runtime itself: answered as Lambda's ServiceException, never as a
            # dropped connection the caller cannot classify.
            self._error(
                HTTPStatus.INTERNAL_SERVER_ERROR, "ServiceException", f"{type(exc).__name__}: {exc}"
            )

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if split_url_path(path) is not None:
            self._function_url("GET", self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        elif path == STATS_PATH:
            stats = self.server.runtime.stats()
            self._json(HTTPStatus.OK, {name: s.as_dict() for name, s in stats.items()})
        else:
            self._lambda_read(path)

    # -- ListFunctions, GetFunction, GetFunctionConfiguration (runtime.configuration) ----------

    def _lambda_read(self, path: str) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)

        def one(key: str) -> str | None:
            values = query.get(key)
            return values[0] if values else None

        runtime = self.server.runtime
        try:
            if path in LIST_PATHS:
                document = list_functions(
                    runtime.registered(), marker=one("Marker"), max_items=one("MaxItems")
                )
            elif match := CONFIGURATION_PATH.match(path):
                document = function_configuration(self._one_function(match["name"], one))
            elif match := FUNCTION_PATH.match(path):
                document = get_function(self._one_function(match["name"], one))
            else:
                self._error(HTTPStatus.NOT_FOUND, "UnknownOperationException", f"no route {path}")
                return
        except FunctionNotFoundError as exc:
            self._error(
                HTTPStatus.NOT_FOUND, "ResourceNotFoundException", f"Function not found: {exc}"
            )
            return
        except BadParameterError as exc:
            self._error(HTTPStatus.BAD_REQUEST, "InvalidParameterValueException", str(exc))
            return
        self._json(HTTPStatus.OK, document)

    def _one_function(self, segment: str, one: Any) -> Registered:
        """The function a path names; only `$LATEST` exists here (no published versions)."""
        runtime = self.server.runtime
        name = function_name(segment)
        qualifier = one("Qualifier") or _qualifier(segment)
        if qualifier not in (None, "$LATEST"):
            raise FunctionNotFoundError(f"{runtime.settings.function_arn(name)}:{qualifier}")
        return runtime.registered(name)[0]

    def do_PUT(self) -> None:
        self._other_method("PUT")

    def do_PATCH(self) -> None:
        self._other_method("PATCH")

    def do_DELETE(self) -> None:
        self._other_method("DELETE")

    def __getattr__(self, name: str) -> Any:
        # A Function URL hands every method to the function (TRACE, OPTIONS, HEAD, ...), where
        # http.server would answer 501 for any method without a do_<METHOD>.
        method = name.removeprefix("do_")
        if name.startswith("do_") and method.isalpha() and method.isupper():
            return lambda: self._other_method(method)
        raise AttributeError(name)

    def _other_method(self, method: str) -> None:
        path = urllib.parse.urlsplit(self.path).path
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if split_url_path(path) is not None:
            self._function_url(method, body)
        else:
            self._error(HTTPStatus.NOT_FOUND, "UnknownOperationException", f"no route {path}")

    # -- Function URLs (slotguard.local.runtime.urls) ------------------------------------------

    def _function_url(self, method: str, body: bytes) -> None:
        url = urllib.parse.urlsplit(self.path)
        split = split_url_path(url.path)
        assert split is not None
        name, path = split
        if self.server.runtime.worker(name) is None:
            self._error(HTTPStatus.NOT_FOUND, "ResourceNotFoundException", f"no function {name}")
            return
        event = request_event(
            method=method,
            path=path,
            query=url.query,
            headers=self.headers.items(),
            body=body,
            source_ip=self.client_address[0],
            domain=self.headers.get("Host", "localhost"),
        )
        try:
            outcome = self.server.runtime.invoke(
                name, Invocation(payload=json.dumps(event).encode())
            )
        except Exception:
            self._answer(HttpAnswer(502, [("Content-Type", "application/json")], b"{}"))
            return
        if outcome is None:
            self._answer(throttled())
            return
        self._answer(response_from_result(outcome.body, outcome.function_error))

    def _answer(self, answer: HttpAnswer) -> None:
        self.send_response(answer.status)
        for key, value in answer.headers:
            if key.lower() not in {"content-length", "connection", "transfer-encoding"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    # -- Lambda Invoke -------------------------------------------------------------------------

    def _invoke(self, name: str, body: bytes) -> None:
        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        refusal = self._refusal(name, body, invocation_type)
        if refusal is not None:
            self._error(*refusal)
            return
        if invocation_type == "DryRun":
            self._reply(HTTPStatus.NO_CONTENT, b"", {})
            return
        invocation = Invocation(payload=body, log_tail=self.headers.get("X-Amz-Log-Type") == "Tail")
        if invocation_type == "Event":
            # Accepted at once; the run happens in the background (dropped if throttled: this
            # runtime keeps no event queue), its result only logged.
            threading.Thread(target=self._run_quietly, args=(name, invocation), daemon=True).start()
            self._reply(HTTPStatus.ACCEPTED, b"", {})
            return
        outcome = self.server.runtime.invoke(name, invocation)
        if outcome is None:
            self._throttled()
            return
        outcome = _within_response_limit(outcome)
        headers = {"X-Amz-Executed-Version": "$LATEST", "X-Amzn-Requestid": outcome.request_id}
        if outcome.function_error:
            headers["X-Amz-Function-Error"] = "Unhandled"
        if invocation.log_tail:
            headers["X-Amz-Log-Result"] = base64.b64encode(tail(outcome.log)).decode()
        self._reply(HTTPStatus.OK, outcome.body, headers)

    def _refusal(
        self, name: str, body: bytes, invocation_type: str
    ) -> tuple[HTTPStatus, str, str] | None:
        """Why Lambda would refuse this request before running anything, or None."""
        runtime = self.server.runtime
        if runtime.worker(name) is None:
            return (
                HTTPStatus.NOT_FOUND,
                "ResourceNotFoundException",
                f"Function not found: {runtime.settings.function_arn(name)}",
            )
        if invocation_type not in ("RequestResponse", "Event", "DryRun"):
            return (
                HTTPStatus.BAD_REQUEST,
                "InvalidParameterValueException",
                "X-Amz-Invocation-Type must be RequestResponse, Event or DryRun, "
                f"not {invocation_type!r}",
            )
        if len(body) > MAX_PAYLOAD_BYTES:
            return (
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "RequestTooLargeException",
                f"Request must be smaller than {MAX_PAYLOAD_BYTES} bytes for the Invoke "
                f"operation; this one is {len(body)} bytes",
            )
        try:
            json.loads(body or b"{}")
        except ValueError as exc:
            return (
                HTTPStatus.BAD_REQUEST,
                "InvalidRequestContentException",
                f"Could not parse request body into json: {exc}",
            )
        return None

    def _run_quietly(self, name: str, invocation: Invocation) -> None:
        self.server.runtime.invoke(name, invocation)

    def _throttled(self) -> None:
        body = {
            "Type": "User",
            "message": "Rate Exceeded.",
            "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
        }
        self._reply(
            HTTPStatus.TOO_MANY_REQUESTS,
            json.dumps(body).encode(),
            {
                "x-amzn-ErrorType": "TooManyRequestsException",
                "Retry-After": "1",
                "Content-Type": "application/json",
            },
        )

    # -- storm support -------------------------------------------------------------------------

    def _freeze(self, name: str, body: bytes) -> None:
        try:
            request = json.loads(body or b"{}")
            count = int(request["count"])
            outcome = self.server.runtime.freeze(
                name, count, request.get("payload"), fresh=bool(request.get("fresh", False))
            )
        except FunctionNotFoundError as exc:
            self._error(
                HTTPStatus.NOT_FOUND, "ResourceNotFoundException", f"Function not found: {exc}"
            )
            return
        except (KeyError, TypeError, ValueError) as exc:
            self._error(
                HTTPStatus.BAD_REQUEST,
                "InvalidParameterValueException",
                f'freeze expects {{"count": N, "payload": {{...}}}}: {exc}',
            )
            return
        self._json(
            HTTPStatus.OK,
            {"frozen": outcome.frozen, "failed": outcome.failed, "errors": outcome.errors},
        )

    # -- responses -----------------------------------------------------------------------------

    def _error(self, status: HTTPStatus, error_type: str, message: str) -> None:
        body = json.dumps({"Type": "User", "Message": message, "message": message}).encode()
        self._reply(
            status, body, {"x-amzn-ErrorType": error_type, "Content-Type": "application/json"}
        )

    def _json(self, status: HTTPStatus, document: object) -> None:
        self._reply(status, json.dumps(document).encode(), {"Content-Type": "application/json"})

    def _reply(self, status: HTTPStatus, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        headers.setdefault("Content-Type", "application/json")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
