"""The runtime's Function URL front: HTTP request -> payload 2.0 event -> HTTP response."""

from __future__ import annotations

import base64
import json

from slotguard.local.runtime.urls import request_event, response_from_result, split_url_path


def test_paths_name_the_function_and_keep_the_rest() -> None:
    assert split_url_path("/urls/api/items/3") == ("api", "/items/3")
    assert split_url_path("/urls/api") == ("api", "/")
    assert split_url_path("/2015-03-31/functions/api/invocations") is None
    assert split_url_path("/urls/") is None


def test_request_becomes_the_function_url_event() -> None:
    event = request_event(
        method="post",
        path="/items",
        query="limit=2&tag=a&tag=b",
        headers=[
            ("Content-Type", "application/json"),
            ("X-Many", "1"),
            ("x-many", "2"),
            ("Cookie", "a=1; b=2"),
        ],
        body=b'{"name": "x"}',
    )
    assert event["version"] == "2.0"
    assert event["rawPath"] == "/items"
    assert event["rawQueryString"] == "limit=2&tag=a&tag=b"
    assert event["queryStringParameters"] == {"limit": "2", "tag": "a,b"}
    assert event["headers"] == {"content-type": "application/json", "x-many": "1,2"}
    assert event["cookies"] == ["a=1", "b=2"]
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["body"] == '{"name": "x"}'
    assert event["isBase64Encoded"] is False


def test_binary_or_non_utf8_bodies_are_base64() -> None:
    for content_type, body in (("application/octet-stream", b"ab"), ("application/json", b"\x80")):
        event = request_event(
            method="POST", path="/", query="", headers=[("content-type", content_type)], body=body
        )
        assert event["isBase64Encoded"] is True
        assert base64.b64decode(event["body"]) == body


def test_responses_map_as_function_urls_do() -> None:
    answer = response_from_result(
        json.dumps(
            {
                "statusCode": 201,
                "headers": {"Content-Type": "application/json", "Idempotent-Replayed": "true"},
                "cookies": ["s=1"],
                "body": '{"id": 1}',
            }
        ).encode(),
        function_error=False,
    )
    assert answer.status == 201
    assert ("Set-Cookie", "s=1") in answer.headers
    assert answer.body == b'{"id": 1}'
    assert response_from_result(b'{"plain": true}', function_error=False).status == 200
    assert response_from_result(b'{"errorMessage": "x"}', function_error=True).status == 502
    encoded = json.dumps({"statusCode": 200, "body": "AAE=", "isBase64Encoded": True}).encode()
    assert response_from_result(encoded, function_error=False).body == b"\x00\x01"
