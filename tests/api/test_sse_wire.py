"""The exact bytes of the streams (sse-starlette frames them): the OpenAI wire format."""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app
from tests.fakes import EchoGenerator
from tests.serving_fixtures import serving, settings_for

pytestmark = pytest.mark.integration  # a live uvicorn server


def test_streams_use_the_openai_framing(tmp_path) -> None:
    app = create_app(settings_for(tmp_path), generator=EchoGenerator())
    with serving(app) as url:
        chat = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
            "model": "base", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        ask = httpx.post(f"{url}/ask", timeout=30,
                         json={"question": "leave?", "use_rag": False, "stream": True})
    for resp in (chat, ask):
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert "\r" not in resp.text
    blocks = chat.text.split("\n\n")
    assert blocks[-1] == "" and blocks[-2] == "data: [DONE]"
    assert all(b.startswith('data: {"id": ') and "\n" not in b for b in blocks[:-2])
    ask_blocks = ask.text.split("\n\n")
    assert ask_blocks[0].startswith('event: sources\ndata: {"type": "sources"')
    assert ask_blocks[-2].startswith('event: done\ndata: {"type": "done"')
