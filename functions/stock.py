"""Example of a team's own handler: adjust an item's stock, written with SQLAlchemy.

It uses only what docs/functions.md ("Bring your own code") documents: `session(context)` for
one transaction on the instance's kept connection, `DatabaseUnavailableError` for the 503, and
the instance's logger and metrics, with each log line carrying this invocation's request id
(`with_lambda_context`, as docs/local.md advises). Invoked directly (an SQS consumer, a step
function, another service), with the event `{"item_id": 1, "change": -2}`.

The adjustment locks the row (`SELECT ... FOR UPDATE`), so concurrent adjustments of one item
queue on the lock (the role's `lock_timeout` bounds the wait) and stock never goes below zero.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import BigInteger, Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .errors import DatabaseUnavailableError
from .observability import flush, logger, with_lambda_context
from .sqlalchemy_db import session


class Base(DeclarativeBase):
    """The team's ORM base: its models map tables its migrations create."""


class Item(Base):
    """The `items` table (migration 0001.items)."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)


class Adjustment(BaseModel):
    """The event. Strict: "2" is not a change."""

    model_config = ConfigDict(extra="forbid", strict=True)

    item_id: int = Field(ge=1, le=2**63 - 1)
    change: int = Field(ge=-(2**31 - 1), le=2**31 - 1)


def _answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body, sort_keys=True),
    }


def adjust(event: Any, context: LambdaContext | None) -> tuple[int, dict[str, Any]]:
    """The status code and body of one adjustment."""
    try:
        wanted = Adjustment.model_validate(event)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors()]
        return 400, {"error": "invalid event", "problems": problems}
    try:
        with session(context) as db:
            item = db.scalars(
                select(Item).where(Item.id == wanted.item_id).with_for_update()
            ).one_or_none()
            if item is None:
                return 404, {"error": f"no item {wanted.item_id}"}
            if item.quantity + wanted.change < 0:
                return 409, {
                    "error": "not enough stock",
                    "item_id": item.id,
                    "quantity": item.quantity,
                    "change": wanted.change,
                }
            item.quantity += wanted.change
            return 200, {"item_id": item.id, "name": item.name, "quantity": item.quantity}
    except DatabaseUnavailableError as exc:
        return 503, {"error": "database unavailable", "reason": exc.reason}


@with_lambda_context  # per instance: see docs/local.md, not powertools' inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        status, body = adjust(event, context)
        if status >= 500:
            logger.warning("stock adjustment failed", extra=body)
        return _answer(status, body)
    finally:
        flush()
