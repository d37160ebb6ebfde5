"""The UI's HTTP client: server-sent events parsing, and every failure (API down, API error,
error inside a stream) as a readable message rather than a traceback."""

from __future__ import annotations

import httpx
import pytest

from tests.ui.conftest import Stack
from ui.chat import chat_fn, compare_fn
from ui.client import ApiClient, ApiError, error_message, parse_sse
from ui.serving import free_port


def test_parse_sse_events() -> None:
    lines = ["event: sources", 'data: {"type": "sources", "id": "a1", "sources": []}', "",
             ": a comment", "event: answer", 'data: {"delta":', 'data:  " hi"}', "", "",
             'data: {"type": "done", "answer": "hi"}']
    events = list(parse_sse(iter(lines)))
    assert [e.kind for e in events] == ["sources", "answer", "done"]
    assert events[0].data["id"] == "a1"
    assert events[1].data == {"delta": " hi"}  # data lines joined with newlines
    assert list(parse_sse(iter(["data: [DONE]", ""])))[0].data == {"text": "[DONE]"}
    assert list(parse_sse(iter(["data:  two"])))[0].data == {"text": " two"}  # one space off


def test_error_message_shapes() -> None:
    request = httpx.Request("GET", "http://x/")
    assert error_message(httpx.Response(
        404, json={"error": {"message": "no such model"}}, request=request)) == "no such model"
    assert error_message(httpx.Response(422, json={"detail": "bad"}, request=request)) == "bad"
    assert error_message(httpx.Response(502, text="<html>bad gateway</html>", request=request)
                         ) == "HTTP 502 Bad Gateway: <html>bad gateway</html>"


def test_unreachable_api_is_a_readable_message_in_chat_and_compare() -> None:
    client = ApiClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ApiError, match="cannot reach the API"):
        client.models()
    *_, (history, answers, box) = chat_fn(client)("hi?", [], [], True, 2, "base", 32, 0.0)
    error = history[-1]["content"]
    assert "⚠️ **Error:** cannot reach the API" in error and "ragtune serve" in error
    assert "Traceback" not in error and answers[0]["error"] and box == ""
    *_, final = compare_fn(client)("hi?", "tuned-a", 2, 32)
    assert all("⚠️ cannot reach the API" in pane for pane in final[:4])


@pytest.mark.integration
def test_api_errors_carry_the_api_message(ui_stack: Stack) -> None:
    client = ApiClient(ui_stack.api_url)
    with pytest.raises(ApiError, match="nope") as err:
        client.ask("hi?", model="nope")
    assert err.value.status == 404
    with pytest.raises(ApiError, match="top_k") as err:
        list(client.ask_stream("hi?", top_k=10_000))
    assert err.value.status == 422
    events = list(client.ask_stream("How many days of annual leave?", top_k=2))
    assert events[0].kind == "sources" and events[-1].kind == "done"
    assert events[-1].data["id"] == events[0].data["id"]  # every answer carries its id
    assert {e.kind for e in events[1:-1]} == {"reasoning", "answer"}
