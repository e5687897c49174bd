"""Example of a slow workload's handler: a report whose query runs for seconds, not milliseconds.

Belongs to a workload of its own (stack setting `workloads`, e.g. `Pulumi.workloads.yaml`): its
role's `statement_timeout` is long enough for the report, and its pool share keeps a burst of
reports from taking the API's server connections. Invoked directly with
`{"seconds": 8}`: the query stands for a heavy aggregate (it sleeps `seconds` inside the database,
holding its server connection like a real long query, then summarises the items table).
`seconds` is bounded by MAX_SECONDS and by the time the invocation has left.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .db import transaction
from .errors import DatabaseUnavailableError
from .observability import flush, logger, note_invocation, with_lambda_context

MAX_SECONDS = 60.0
# Time kept after the query to build the answer (the budget's answer reserve is 1 s).
ANSWER_RESERVE_MS = 1500


class ReportRequest(BaseModel):
    """The event. Strict: "8" is not a duration."""

    model_config = ConfigDict(extra="forbid", strict=True)

    seconds: float = Field(default=0.0, ge=0, le=MAX_SECONDS)


def _answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body, sort_keys=True),
    }


def report(event: Any, context: LambdaContext | None) -> tuple[int, dict[str, Any]]:
    """The status code and body of one report."""
    try:
        wanted = ReportRequest.model_validate(event)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors()]
        return 400, {"error": "invalid event", "problems": problems}
    if context is not None:
        left_s = (context.get_remaining_time_in_millis() - ANSWER_RESERVE_MS) / 1000
        if wanted.seconds > left_s:
            return 400, {
                "error": "report longer than the invocation may run",
                "seconds": wanted.seconds,
                "left_s": round(left_s, 3),
            }
    started = time.monotonic()
    try:
        with transaction(context) as conn:
            row = conn.execute(
                "SELECT pg_sleep(%s) AS slept, count(*) AS items,"
                " coalesce(sum(quantity), 0) AS quantity, current_user AS role,"
                " current_setting('statement_timeout') AS statement_timeout FROM items",
                (wanted.seconds,),
            ).fetchone()
    except DatabaseUnavailableError as exc:
        return 503, {"error": "database unavailable", "reason": exc.reason}
    assert row is not None
    values = dict(row)  # the helper's connections return rows as dicts (dict_row)
    return 200, {
        "items": int(values["items"]),
        "quantity": int(values["quantity"]),
        "role": str(values["role"]),
        "statement_timeout": str(values["statement_timeout"]),
        "seconds": round(time.monotonic() - started, 3),
    }


@with_lambda_context  # per instance: see docs/local.md, not powertools' inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    note_invocation()
    try:
        status, body = report(event, context)
        if status >= 500:
            logger.warning("report failed", extra=body)
        return _answer(status, body)
    finally:
        flush()
