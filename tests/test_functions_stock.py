"""The example team handler (`functions/stock.py`), through a real PgBouncer, as a team tests its own."""

from __future__ import annotations

import json
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.fixtures_functions import FakeLambdaContext, FunctionsStack, load_function_instance

pytestmark = pytest.mark.integration


def new_item(stack: FunctionsStack, quantity: int) -> int:
    with stack.postgres.connect_admin(dbname="app") as admin:
        row = admin.execute(
            "insert into app.items (name, quantity) values (%s, %s) returning id",
            (f"stock-{uuid.uuid4().hex[:8]}", quantity),
        ).fetchone()
    assert row is not None
    return int(row[0])


def quantity_of(stack: FunctionsStack, item_id: int) -> int:
    with stack.postgres.connect_admin(dbname="app") as admin:
        row = admin.execute("select quantity from app.items where id = %s", (item_id,)).fetchone()
    assert row is not None
    return int(row[0])


def invoke(stock: Any, event: Any, name: str = "fn-stock") -> tuple[int, dict[str, Any]]:
    answer = stock.handler(event, FakeLambdaContext(name))
    return answer["statusCode"], json.loads(answer["body"])


def test_an_adjustment_is_applied_and_answered(function_env, functions_stack):
    function_env(AWS_LAMBDA_FUNCTION_NAME="fn-stock")
    stock = load_function_instance("stock")
    item = new_item(functions_stack, 5)
    assert invoke(stock, {"item_id": item, "change": -2})[0] == 200
    status, body = invoke(stock, {"item_id": item, "change": 10})
    assert (status, body["quantity"]) == (200, 13)
    assert quantity_of(functions_stack, item) == 13


def test_stock_never_goes_below_zero(function_env, functions_stack):
    function_env(AWS_LAMBDA_FUNCTION_NAME="fn-stock")
    stock = load_function_instance("stock")
    item = new_item(functions_stack, 1)
    status, body = invoke(stock, {"item_id": item, "change": -2})
    assert status == 409
    assert body["quantity"] == 1
    assert quantity_of(functions_stack, item) == 1


def test_unknown_items_and_bad_events_are_answered_4xx(function_env, functions_stack):
    function_env(AWS_LAMBDA_FUNCTION_NAME="fn-stock")
    stock = load_function_instance("stock")
    assert invoke(stock, {"item_id": 2**62, "change": 1})[0] == 404
    bad: list[Any] = [
        {"item_id": "1", "change": 1},
        {"item_id": 1},
        {"item_id": 0, "change": 1},
        [],
    ]
    for event in bad:
        status, body = invoke(stock, event)
        assert status == 400, event
        assert body["problems"]


def test_concurrent_instances_sell_exactly_the_stock(function_env, functions_stack):
    """Three instances, 30 sales of one unit from 20: the row lock lets exactly 20 through."""
    function_env(AWS_LAMBDA_FUNCTION_NAME="fn-stock-burst")
    instances = [load_function_instance("stock") for _ in range(3)]
    item = new_item(functions_stack, 20)

    def sell(stock: Any) -> list[int]:
        return [
            invoke(stock, {"item_id": item, "change": -1}, "fn-stock-burst")[0] for _ in range(10)
        ]

    with ThreadPoolExecutor(max_workers=3) as pool:
        statuses = [s for batch in pool.map(sell, instances) for s in batch]
    assert sorted(set(statuses)) == [200, 409]
    assert statuses.count(200) == 20
    assert quantity_of(functions_stack, item) == 0


def test_an_unreachable_database_is_a_503_with_the_reason(function_env, functions_stack):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    function_env(AWS_LAMBDA_FUNCTION_NAME="fn-stock-down", DB_PORT=str(port), DB_RETRY_BUDGET_S="1")
    stock = load_function_instance("stock")
    status, body = invoke(stock, {"item_id": 1, "change": 1}, "fn-stock-down")
    assert status == 503
    assert "database unavailable" in body["reason"]
