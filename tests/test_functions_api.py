"""The items API and the health endpoint, through a real PgBouncer to a real PostgreSQL."""

from __future__ import annotations

import base64
import importlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from slotguard.local.ports import free_port
from tests.fixtures_functions import FakeLambdaContext, FunctionsStack, load_function_instance

pytestmark = pytest.mark.integration

OPENAPI_FILE = Path(__file__).resolve().parent.parent / "functions" / "openapi.json"


def http_event(
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    query: dict[str, str] | None = None,
    raw_body: str | None = None,
    b64: bool = False,
) -> dict[str, Any]:
    """An HTTP API / Function URL event (payload format 2.0)."""
    if raw_body is None and body is not None:
        raw_body = json.dumps(body)
    if b64 and raw_body is not None:
        raw_body = base64.b64encode(raw_body.encode()).decode()
    query = query or {}
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "&".join(f"{k}={v}" for k, v in query.items()),
        "queryStringParameters": query or None,
        "headers": {"content-type": "application/json", **(headers or {})},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "local",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "pytest",
            },
            "requestId": "r",
            "routeKey": "$default",
            "stage": "$default",
            "time": "21/Nov/2026:00:00:00 +0000",
            "timeEpoch": 0,
        },
        "body": raw_body,
        "isBase64Encoded": b64,
    }


@pytest.fixture
def api(function_env):
    function_env(via="pooler", AWS_LAMBDA_FUNCTION_NAME="api")
    module = load_function_instance("api")
    yield module
    reset_instance(module)


def reset_instance(module: ModuleType) -> None:
    """Close the simulated instance's kept connection."""
    importlib.import_module(f"{module.__package__}.db").reset()


def call(api: ModuleType, event: dict[str, Any]) -> tuple[int, Any, dict[str, Any]]:
    response = api.handler(event, FakeLambdaContext("api"))
    body = response.get("body") or ""
    return response["statusCode"], (json.loads(body) if body else None), response


def count_items(stack: FunctionsStack, where: str = "true", params: tuple[Any, ...] = ()) -> int:
    with stack.postgres.connect_admin(dbname="app") as admin:
        query = f"select count(*) from app.items where {where}"  # noqa: S608 - literal test conditions
        row = admin.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


# -- the happy paths ---------------------------------------------------------------------------


def test_create_get_list_delete(api, functions_stack):
    ids = []
    for n in range(5):
        status, body, _ = call(
            api, http_event("POST", "/items", {"name": f"crud-{n}", "quantity": n})
        )
        assert status == 201, body
        assert body["name"] == f"crud-{n}"
        ids.append(body["id"])
    status, body, _ = call(api, http_event("GET", f"/items/{ids[2]}"))
    assert (status, body["quantity"]) == (200, 2)
    seen, cursor = [], None
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        status, page, _ = call(api, http_event("GET", "/items", query=query))
        assert status == 200
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen)
    assert set(ids) <= set(seen)
    status, _, _ = call(api, http_event("DELETE", f"/items/{ids[0]}"))
    assert status == 204
    assert call(api, http_event("GET", f"/items/{ids[0]}"))[0] == 404
    assert call(api, http_event("DELETE", f"/items/{ids[0]}"))[0] == 404


def test_hostile_looking_text_is_stored_verbatim_not_executed(api, functions_stack):
    name = "Robert'); DROP TABLE items;--"
    status, body, _ = call(
        api, http_event("POST", "/items", {"name": name, "description": "<script>x</script>\n"})
    )
    assert status == 201
    assert call(api, http_event("GET", f"/items/{body['id']}"))[1]["name"] == name
    assert count_items(functions_stack, "name = %s", (name,)) >= 1


# -- idempotency --------------------------------------------------------------------------------


def test_same_create_with_same_idempotency_key_stores_one_row(api, functions_stack):
    event = http_event(
        "POST", "/items", {"name": "once", "quantity": 7}, {"idempotency-key": "order-42"}
    )
    first = call(api, event)
    second = call(api, event)
    assert first[0] == 201
    assert second[0] == 200
    assert second[2]["headers"]["Idempotent-Replayed"] == "true"
    assert first[1] == second[1]
    assert count_items(functions_stack, "idempotency_key = %s", ("order-42",)) == 1


def test_concurrent_retries_with_one_key_store_one_row(function_env, functions_stack):
    function_env(via="pooler", AWS_LAMBDA_FUNCTION_NAME="api")
    instances = [load_function_instance("api") for _ in range(6)]
    event = http_event("POST", "/items", {"name": "burst"}, {"idempotency-key": "burst-key-1"})
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda inst: call(inst, event), instances))
    statuses = sorted(r[0] for r in results)
    assert statuses == [200] * 5 + [201]
    assert len({r[1]["id"] for r in results}) == 1
    assert count_items(functions_stack, "idempotency_key = %s", ("burst-key-1",)) == 1
    for inst in instances:
        reset_instance(inst)


def test_reused_key_with_a_different_body_is_a_conflict(api, functions_stack):
    headers = {"idempotency-key": "reused-1"}
    assert call(api, http_event("POST", "/items", {"name": "a"}, headers))[0] == 201
    status, body, _ = call(api, http_event("POST", "/items", {"name": "b"}, headers))
    assert status == 409
    assert "Idempotency-Key" in body["reason"]
    assert count_items(functions_stack, "idempotency_key = %s", ("reused-1",)) == 1


# -- bad input: 4xx with a reason, nothing written -------------------------------------------------

BAD_CREATES: dict[str, dict[str, Any]] = {
    "malformed json": {"raw_body": '{"name": "x"'},
    "json array": {"body": ["name"]},
    "json string": {"body": "name"},
    "empty body": {"raw_body": ""},
    "name missing": {"body": {"quantity": 1}},
    "name wrong type": {"body": {"name": 123}},
    "quantity as string": {"body": {"name": "x", "quantity": "3"}},
    "quantity as float": {"body": {"name": "x", "quantity": 1.5}},
    "quantity as bool": {"body": {"name": "x", "quantity": True}},
    "quantity negative": {"body": {"name": "x", "quantity": -1}},
    "quantity too big": {"body": {"name": "x", "quantity": 2**40}},
    "unknown field": {"body": {"name": "x", "admin": True}},
    "name too long": {"body": {"name": "x" * 201}},
    "name blank": {"body": {"name": "   "}},
    "nul byte": {"body": {"name": "a\u0000b"}},
    "terminal escape": {"body": {"name": "\u001b[2Jgone"}},
    "lone surrogate": {"raw_body": '{"name": "\\ud800"}'},
    "newline in name": {"body": {"name": "two\nlines"}},
    "oversize body": {"body": {"name": "x", "description": "y" * 20000}},
    "oversize base64 body": {"body": {"name": "x", "description": "y" * 20000}, "b64": True},
    "not json content type": {"body": {"name": "x"}, "headers": {"content-type": "text/plain"}},
    "form content type": {
        "raw_body": "name=x",
        "headers": {"content-type": "application/x-www-form-urlencoded"},
    },
    "bad idempotency key": {"body": {"name": "x"}, "headers": {"idempotency-key": "has spaces"}},
    "long idempotency key": {"body": {"name": "x"}, "headers": {"idempotency-key": "k" * 129}},
}


@pytest.mark.parametrize("case", list(BAD_CREATES), ids=list(BAD_CREATES))
def test_bad_create_gets_4xx_and_writes_nothing(api, functions_stack, case):
    before = count_items(functions_stack)
    status, body, _ = call(api, http_event("POST", "/items", **BAD_CREATES[case]))
    assert 400 <= status < 500, (status, body)
    assert body["reason"]
    assert count_items(functions_stack) == before


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("GET", "/items/abc", None),
        ("GET", "/items/0", None),
        ("GET", "/items/99999999999999999999", None),
        ("DELETE", "/items/-1", None),
        ("GET", "/items", {"limit": "0"}),
        ("GET", "/items", {"limit": "1000"}),
        ("GET", "/items", {"cursor": "not-a-cursor"}),
        ("GET", "/items", {"cursor": base64.urlsafe_b64encode(b"id:-5").decode()}),
        ("GET", "/nowhere", None),
    ],
)
def test_bad_reads_get_4xx(api, functions_stack, method, path, query):
    before = count_items(functions_stack)
    status, body, _ = call(api, http_event(method, path, query=query))
    assert 400 <= status < 500, (status, body)
    assert body["reason"]
    assert count_items(functions_stack) == before


@pytest.mark.parametrize(
    ("case", "expected"),
    [("oversize body", 413), ("oversize base64 body", 413), ("not json content type", 415)],
)
def test_size_and_media_type_are_checked_before_parsing(api, case, expected):
    assert call(api, http_event("POST", "/items", **BAD_CREATES[case]))[0] == expected


def test_unreachable_database_is_a_503_with_a_reason(function_env):
    function_env(DB_PORT=str(free_port()), DB_RETRY_BUDGET_S="0.5", AWS_LAMBDA_FUNCTION_NAME="api")
    api = load_function_instance("api")
    status, body, response = call(api, http_event("GET", "/items"))
    assert status == 503
    assert body["error"] == "database_unavailable"
    assert "Connection" in body["reason"]
    assert response["headers"]["Retry-After"] == "1"


def test_metrics_count_one_cold_start_per_instance(api, capsys):
    call(api, http_event("GET", "/items"))
    first = capsys.readouterr().out
    call(api, http_event("GET", "/items"))
    second = capsys.readouterr().out

    def metric_names(out: str) -> set[str]:
        names: set[str] = set()
        for line in out.splitlines():
            if line.startswith("{") and "_aws" in line:
                for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                    names |= {m["Name"] for m in directive["Metrics"]}
        return names

    assert {"ColdStart", "DbConnectLatency"} <= metric_names(first)
    assert "ColdStart" not in metric_names(second)


# -- OpenAPI --------------------------------------------------------------------------------------


def test_committed_openapi_description_is_current():
    from functions.api import openapi_json

    assert OPENAPI_FILE.read_text() == openapi_json(), "run: uv run python -m functions.openapi"
    spec = json.loads(OPENAPI_FILE.read_text())
    assert set(spec["paths"]) == {"/items", "/items/{item_id}"}
    assert {"post", "get"} <= set(spec["paths"]["/items"])


# -- health ---------------------------------------------------------------------------------------


def _health(function_env: Callable[..., dict[str, str]], **env: str) -> tuple[int, Any]:
    function_env(AWS_LAMBDA_FUNCTION_NAME="health", **env)
    module = load_function_instance("health")
    response = module.handler({}, FakeLambdaContext("health"))
    return response["statusCode"], json.loads(response["body"])


def test_health_reports_utilisation(function_env, functions_stack):
    # An admin session of the test's own, so the count does not hang on what earlier tests left
    # connected: the pooler's server connection (the health query) and this one at least.
    with functions_stack.postgres.connect_admin():
        status, body = _health(function_env)
    assert status == 200
    connections = body["connections"]
    assert connections["max"] == 40
    assert connections["total"] >= 2  # at least the pooler's server connection and the admin
    assert connections["active"] >= 1  # the health query itself
    assert connections["percent"] == round(100 * connections["total"] / 40, 1)


def test_health_reports_the_endpoint_and_the_role_settings(function_env, functions_stack):
    env = function_env()
    status, body = _health(function_env)
    assert status == 200
    assert body["via"] == {"host": env["DB_HOST"], "port": int(env["DB_PORT"])}
    assert body["via"]["port"] == functions_stack.bouncer.port  # through the pooler
    role = body["role"]
    app_user = functions_stack.event["app_user"]
    assert role["name"] == app_user["name"]
    assert role["connection_limit"] == app_user["connection_limit"]
    assert role["settings"]["statement_timeout"] == str(app_user["statement_timeout_ms"])
    assert role["settings"]["lock_timeout"] == str(app_user["lock_timeout_ms"])
    assert role["settings"]["idle_in_transaction_session_timeout"] == str(
        app_user["idle_in_transaction_session_timeout_ms"]
    )


def test_health_reports_the_path_the_connection_took(function_env, functions_stack):
    # inet_client_addr()/inet_client_port() are the server's view of the session's client
    # ("System Information Functions", https://www.postgresql.org/docs/current/functions-info.html).
    # Through PgBouncer the backend's client is PgBouncer's own server connection; wired
    # straight to PostgreSQL it is this function's socket. Real PgBouncer, real PostgreSQL.
    status, body = _health(function_env)
    assert status == 200
    path = body["path"]
    assert path["function"]
    assert path["server_saw"]
    assert path["server_saw"] != path["function"]
    status, direct = _health(function_env, via="database")
    assert status == 200
    assert direct["path"]["server_saw"] == direct["path"]["function"]


def test_health_is_503_at_the_alarm_threshold(function_env):
    status, body = _health(function_env, HEALTH_ALARM_PERCENT="1")
    assert status == 503
    assert body["status"] == "saturated"
    assert "alarm at 1.0%" in body["reason"]


def test_health_is_503_when_the_database_is_unreachable(function_env):
    status, body = _health(function_env, DB_PORT=str(free_port()), DB_RETRY_BUDGET_S="0.3")
    assert status == 503
    assert body["status"] == "unavailable"


@pytest.mark.parametrize(
    ("mutate", "missing"),
    [
        (lambda e: e["requestContext"].pop("stage"), "requestContext.stage"),
        (lambda e: e["requestContext"].pop("http"), "requestContext.http.method"),
        (lambda e: e.pop("rawPath"), "rawPath"),
        (lambda e: e.update(headers=["x"]), "headers"),
    ],
)
def test_an_event_that_is_not_payload_2_is_a_400_and_writes_nothing(
    api, functions_stack, mutate, missing
):
    before = count_items(functions_stack)
    event = http_event("POST", "/items", {"name": "never"})
    mutate(event)
    status, body, _ = call(api, event)
    assert status == 400
    assert body["error"] == "bad_event"
    assert missing in body["reason"]
    assert count_items(functions_stack) == before
