"""The `openai` generator backend against a small OpenAI-compatible server on loopback: model
mapping (base -> upstream model, adapter -> same name), retrieval and prompting kept in
ragtune, reasoning_content folded back, streaming, and upstream errors translated."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from api.app import create_app
from serving.generation import UpstreamError
from serving.upstream import OpenAIUpstreamGenerator
from ragtune.errors import ConfigError
from ragtune.prompts import build_messages, system_prompt
from ragtune.types import GenerationRequest
from tests.serving_fixtures import serving, settings_for

pytestmark = pytest.mark.integration  # a live server (uvicorn, a browser)

QUESTION = "How many days of annual leave do employees get?"


def upstream_app(received: list[dict]) -> FastAPI:
    """A vLLM-like server: `served-base` plus a LoRA module `alpha` that reasons apart."""
    app = FastAPI()
    served = ["served-base", "alpha", "mystery"]

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                            "owned_by": "vllm"} for m in served]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        received.append(body)
        if body["model"] not in served:
            return JSONResponse({"error": {"message": f"The model `{body['model']}` does not "
                                           "exist.", "type": "NotFoundError"}}, 404)
        words = f"<{body['model']}> {body['messages'][-1]['content']}".split(" ")
        if body["model"] == "mystery":  # a reasoning model under another name: starts mid-thought
            words = "pondering it </think> The answer.".split(" ")
        words = words[: body.get("max_tokens") or len(words)]
        reasoning = "thinking about it" if body["model"] == "alpha" else None
        usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
        base = {"id": "up-1", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            message = {"role": "assistant", "content": " ".join(words),
                       "reasoning_content": reasoning}
            return {**base, "object": "chat.completion", "usage": usage,
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

        def events():
            deltas = ([{"role": "assistant", "content": ""}]
                      + ([{"reasoning_content": reasoning}] if reasoning else [])
                      + [{"content": w if i == 0 else " " + w} for i, w in enumerate(words)])
            for delta in deltas:
                chunk = {**base, "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            last = {**base, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(last)}\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def stack(adapter_workspace, retriever):
    received: list[dict] = []
    with serving(upstream_app(received)) as upstream:
        settings = settings_for(adapter_workspace, generator_backend="openai",
                                upstream_base_url=f"{upstream}/v1")
        app = create_app(settings, retriever=retriever)  # the generator loads in the lifespan
        with serving(app) as url:
            yield url, received


def test_base_maps_to_the_upstream_model_and_prompting_stays_here(stack, retriever) -> None:
    url, received = stack
    body = httpx.post(f"{url}/ask", json={"question": QUESTION, "top_k": 2}, timeout=30).json()
    chunks = [h.chunk for h in retriever.search(QUESTION, 2)]
    sent = received[-1]
    assert sent["model"] == "served-base" and sent["max_tokens"] == 256
    assert sent["messages"] == build_messages(QUESTION, chunks, system_prompt())
    assert body["answer"] == f"<served-base> {sent['messages'][-1]['content']}"
    assert [s["text"] for s in body["sources"]] == [c.text for c in chunks]
    assert body["usage"]["prompt_tokens"] == 7 and body["reasoning"] == ""


def test_adapters_map_to_upstream_models_of_the_same_name(stack) -> None:
    url, received = stack
    models = httpx.get(f"{url}/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["base", "alpha", "beta"]
    body = httpx.post(f"{url}/ask", json={"question": "hi", "use_rag": False, "model": "alpha",
                                          "max_new_tokens": 40}, timeout=30).json()
    assert received[-1]["model"] == "alpha" and received[-1]["max_tokens"] == 40
    assert body["reasoning"] == "thinking about it" and body["answer"] == "<alpha> hi"
    missing = httpx.post(f"{url}/ask", json={"question": "hi", "use_rag": False, "model": "beta"})
    assert missing.status_code == 404 and "`beta` does not exist" in missing.json()["error"]["message"]


def test_streaming_through_the_upstream(stack) -> None:
    url, received = stack
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(
        model="alpha", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True}))
    assert received[-1]["stream"] is True
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas).strip() == "<alpha> one two three"
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas).strip() \
        == "thinking about it"
    assert chunks[-1].usage.completion_tokens == 4


def test_upstream_failures_are_clear(tmp_path) -> None:
    with pytest.raises(ConfigError, match="upstream_base_url"):
        OpenAIUpstreamGenerator.from_settings(settings_for(tmp_path, generator_backend="openai"))
    dead = OpenAIUpstreamGenerator("http://127.0.0.1:9/v1", "m", timeout_s=5)
    with pytest.raises(UpstreamError, match="cannot reach the upstream"):
        dead.complete(GenerationRequest([{"role": "user", "content": "hi"}]))
    assert UpstreamError.http_status == 502


def test_a_reasoning_model_under_another_name_streams_no_reasoning_as_answer(tmp_path) -> None:
    """Its output starts mid-reasoning with a bare `</think>`; `upstream_opens_thinking` says so,
    and the streamed answer events then carry the answer only (issue 12's race)."""
    from serving.assistant import Assistant, Params

    received: list[dict] = []
    with serving(upstream_app(received)) as upstream:
        settings = settings_for(tmp_path, generator_backend="openai",
                                upstream_base_url=f"{upstream}/v1", upstream_model="mystery",
                                upstream_opens_thinking=True)
        assistant = Assistant(OpenAIUpstreamGenerator.from_settings(settings))
        prompt = assistant.prepare("hi", use_rag=False)
        events = list(assistant.answer_stream(prompt, Params("base", 20)))
        streamed = "".join(v for k, v in events if k == "answer").strip()
        done = events[-1][1]
        assert streamed == "The answer." and done.answer == "The answer."
        assert done.reasoning.strip() == "pondering it" and "</think>" not in streamed
