"""The example API: `items` behind a Function URL or an HTTP API (payload format 2.0).

Routing, request validation and the OpenAPI description all come from powertools' resolver and
the pydantic models below; SQL is parameterised only. A create with an `Idempotency-Key` header
is absorbed by the table's unique key (`INSERT ... ON CONFLICT DO NOTHING` in the same
transaction), so a retried request never inserts twice and needs no separate idempotency store.
Bad input is answered 4xx with a reason before anything touches the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.utilities.typing import LambdaContext
from psycopg.rows import DictRow
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .db import transaction
from .errors import DatabaseUnavailableError
from .observability import flush, logger, metrics, with_lambda_context

MAX_BODY_BYTES = 16 * 1024
MAX_BIGINT = 2**63 - 1
# Control characters (other than tab/newline in free text), which PostgreSQL text rejects (NUL)
# or which only serve to corrupt logs and terminals downstream.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_IDEMPOTENCY_KEY = r"^[A-Za-z0-9._:-]{1,128}$"

app = APIGatewayHttpResolver(enable_validation=True)


def _clean_text(value: str, *, single_line: bool) -> str:
    if _CONTROL.search(value) or (single_line and ("\n" in value or "\t" in value)):
        raise ValueError("must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


class ItemIn(BaseModel):
    """A new item. Strict types: "3" is not a quantity."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    quantity: int = Field(default=0, ge=0, le=2**31 - 1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return _clean_text(value, single_line=True)

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        return _clean_text(value, single_line=False)


class Item(BaseModel):
    id: int
    name: str
    description: str
    quantity: int
    created_at: datetime


class ItemPage(BaseModel):
    items: list[Item]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at end")


class Problem(BaseModel):
    error: str
    reason: str


def _problem(status: int, error: str, reason: str, **headers: str) -> Response[Any]:
    return Response(
        status_code=status,
        content_type="application/json",
        body={"error": error, "reason": reason},
        headers=headers or None,
    )


# -- whole-request checks (before validation and routing) ----------------------------------------


def _body_bytes(event: dict[str, Any]) -> int:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return len(body) * 3 // 4
    return len(str(body).encode("utf-8", "surrogatepass"))


def _undecodable_body(event: dict[str, Any]) -> bool:
    """True for a base64 body that is not base64 or not UTF-8 (JSON text must be UTF-8).

    A Function URL base64-encodes a body it cannot pass as text; the resolver decodes it as
    UTF-8 without catching the error, which would end the invocation with an unhandled error
    (a 502 at the URL) instead of a 4xx.
    """
    body = event.get("body")
    if not event.get("isBase64Encoded") or not body:
        return False
    try:
        base64.b64decode(str(body), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return True
    return False


def _malformed(event: Any) -> str | None:
    """What is missing from an event that is not an HTTP API / Function URL payload 2.0."""
    if not isinstance(event, dict):
        return "the event is not an object"
    context = event.get("requestContext")
    context = context if isinstance(context, dict) else {}
    http = context.get("http")
    if not isinstance(http, dict) or not isinstance(http.get("method"), str):
        return "requestContext.http.method is missing"
    if not isinstance(context.get("stage"), str):
        return "requestContext.stage is missing"
    if not isinstance(event.get("rawPath"), str):
        return "rawPath is missing"
    headers = event.get("headers")
    if headers is not None and not isinstance(headers, dict):
        return "headers is not an object"
    return None


def precheck(event: dict[str, Any]) -> dict[str, Any] | None:
    """400 for an event that is not payload 2.0, 413 for oversize bodies, 415 for non-JSON ones,
    422 for bodies that are not UTF-8 text, before anything parses them."""
    malformed = _malformed(event)
    if malformed is not None:
        return _raw_problem(
            400, "bad_event", f"not an HTTP API / Function URL event (payload 2.0): {malformed}"
        )
    if _body_bytes(event) > MAX_BODY_BYTES:
        reason = f"request body exceeds {MAX_BODY_BYTES} bytes"
        return _raw_problem(413, "body_too_large", reason)
    method = str(event.get("requestContext", {}).get("http", {}).get("method", "")).upper()
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    content_type = headers.get("content-type", "application/json").lower()
    if method in {"POST", "PUT", "PATCH"} and not content_type.startswith("application/json"):
        return _raw_problem(415, "unsupported_media_type", "send the body as application/json")
    if method in {"POST", "PUT", "PATCH"} and _undecodable_body(event):
        return _raw_problem(
            422, "invalid_request", "the body must be UTF-8 encoded JSON (base64 allowed)"
        )
    return None


def _raw_problem(status: int, error: str, reason: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"error": error, "reason": reason}),
        "isBase64Encoded": False,
    }


def _unsupported(_exc: RequestUnsupportedContentType) -> Response[Any]:
    return _problem(415, "unsupported_media_type", "send the body as application/json")


def _invalid(exc: RequestValidationError) -> Response[Any]:
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ()))
        problems.append(f"{location}: {error.get('msg', 'invalid')}")
    # The offending input is not echoed back: it may be hostile.
    return _problem(422, "invalid_request", "; ".join(problems) or "invalid request")


def _unavailable(exc: DatabaseUnavailableError) -> Response[Any]:
    logger.warning("database unavailable", extra={"failure": exc.failure, "reason": exc.reason})
    return _problem(503, "database_unavailable", exc.reason, **{"Retry-After": "1"})


def _not_found(_exc: NotFoundError) -> Response[Any]:
    return _problem(404, "not_found", "no such route")


# Registered by call rather than decorator: the decorators are untyped.
app.exception_handler(RequestValidationError)(_invalid)
app.exception_handler(DatabaseUnavailableError)(_unavailable)
app.not_found(_not_found)
app.exception_handler(RequestUnsupportedContentType)(_unsupported)


# -- routes --------------------------------------------------------------------------------------

_COMMON: dict[int, OpenAPIResponse] = {
    413: {"description": "Body too large", "content": {"application/json": {"model": Problem}}},
    415: {"description": "Not JSON", "content": {"application/json": {"model": Problem}}},
    422: {"description": "Invalid request", "content": {"application/json": {"model": Problem}}},
    503: {
        "description": "Database unavailable",
        "content": {"application/json": {"model": Problem}},
    },
}


def _item(row: DictRow) -> dict[str, Any]:
    return Item.model_validate(row).model_dump(mode="json")


def _request_sha256(item: ItemIn) -> str:
    canonical = json.dumps(item.model_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@app.post(
    "/items",
    summary="Create an item",
    responses={
        201: {"description": "Created", "content": {"application/json": {"model": Item}}},
        200: {"description": "Replay of an earlier create with the same Idempotency-Key"},
        409: {"description": "Idempotency-Key reused for a different request"},
        **_COMMON,
    },
)
def create_item(
    item: Annotated[ItemIn, Body()],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="idempotency-key",
            pattern=_IDEMPOTENCY_KEY,
            description="a client-chosen key; a retried create with the same key stores one row",
        ),
    ] = None,
) -> Response[Any]:
    digest = _request_sha256(item)
    with transaction(app.lambda_context) as conn:
        row = conn.execute(
            "INSERT INTO items (name, description, quantity, idempotency_key, request_sha256)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (idempotency_key) DO NOTHING"
            " RETURNING id, name, description, quantity, created_at",
            (item.name, item.description, item.quantity, idempotency_key, digest),
        ).fetchone()
        if row is not None:
            return Response(201, "application/json", _item(row))
        existing = conn.execute(
            "SELECT id, name, description, quantity, created_at, request_sha256"
            " FROM items WHERE idempotency_key = %s",
            (idempotency_key,),
        ).fetchone()
    if existing is None or existing["request_sha256"] != digest:
        return _problem(
            409, "idempotency_conflict", "this Idempotency-Key was used for a different request"
        )
    return Response(200, "application/json", _item(existing), {"Idempotent-Replayed": "true"})


@app.get(
    "/items/<item_id>",
    summary="Get an item",
    responses={
        200: {"description": "The item", "content": {"application/json": {"model": Item}}},
        404: {"description": "No such item"},
        **_COMMON,
    },
)
def get_item(item_id: Annotated[int, Path(gt=0, le=MAX_BIGINT)]) -> Response[Any]:
    with transaction(app.lambda_context) as conn:
        row = conn.execute(
            "SELECT id, name, description, quantity, created_at FROM items WHERE id = %s",
            (item_id,),
        ).fetchone()
    if row is None:
        return _problem(404, "not_found", f"no item {item_id}")
    return Response(200, "application/json", _item(row))


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        value = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return value if prefix == "id" and 0 <= value <= MAX_BIGINT else None


@app.get(
    "/items",
    summary="List items, oldest first, a page at a time",
    responses={
        200: {"description": "A page", "content": {"application/json": {"model": ItemPage}}},
        400: {"description": "Bad cursor"},
        **_COMMON,
    },
)
def list_items(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response[Any]:
    after = 0
    if cursor is not None:
        decoded = _decode_cursor(cursor)
        if decoded is None:
            return _problem(400, "bad_cursor", "cursor is not one this API returned")
        after = decoded
    # Keyset pagination: stable under concurrent inserts and cheap at any depth.
    with transaction(app.lambda_context) as conn:
        rows = conn.execute(
            "SELECT id, name, description, quantity, created_at FROM items"
            " WHERE id > %s ORDER BY id LIMIT %s",
            (after, limit + 1),
        ).fetchall()
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1]["id"]) if len(rows) > limit else None
    body = {"items": [_item(row) for row in page], "next_cursor": next_cursor}
    return Response(200, "application/json", body)


@app.delete(
    "/items/<item_id>",
    summary="Delete an item",
    responses={204: {"description": "Deleted"}, 404: {"description": "No such item"}, **_COMMON},
)
def delete_item(item_id: Annotated[int, Path(gt=0, le=MAX_BIGINT)]) -> Response[Any]:
    with transaction(app.lambda_context) as conn:
        deleted = conn.execute(
            "DELETE FROM items WHERE id = %s RETURNING id", (item_id,)
        ).fetchone()
    if deleted is None:
        return _problem(404, "not_found", f"no item {item_id}")
    return Response(204, None, "")


def openapi_json() -> str:
    """The OpenAPI description, generated from the routes and models above."""
    schema = app.get_openapi_json_schema(
        title="slotguard items API",
        version="1.0.0",
        description="Example resource of the slotguard kit, served through the connection pooler.",
    )
    return json.dumps(json.loads(schema), indent=2, sort_keys=True) + "\n"


@with_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        rejected = precheck(event)
        if rejected is not None:
            return rejected
        return app.resolve(event, context)
    finally:
        flush()


__all__ = ["app", "handler", "metrics", "openapi_json"]
