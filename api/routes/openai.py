"""OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`.

Every tuned adapter is a model name next to "base". Retrieval is an extension, off unless
the request sets `"ragtune": {"use_rag": true}` (or top-level `use_rag`, what openai-python's
`extra_body` sends) or the server runs with `chat_rag_default`. Answers carry the extra
top-level field `sources` (in the first chunk when streaming); clients ignore it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from sse_starlette import ServerSentEvent
from starlette.concurrency import run_in_threadpool

from serving.assistant import Params, Prompt
from api.deps import (LimitError, Services, ServicesDep, check_max_new_tokens, check_text,
                      check_top_k, params_for, require_ask)
from api.errors import error_payload
from serving.history import Answer
from api.schemas import (AUTH_ERRORS, GENERATION_ERRORS, ChatCompletionRequest, ModelCard,
                         ModelList, error_responses)
from api.streaming import SSEResponse, iterate_blocking, run_blocking, sse

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_ask)])

_ROLES = {"developer": "system"}


@router.get("/models", response_model=ModelList, responses=error_responses(*AUTH_ERRORS, 503))
def list_models(services: ServicesDep) -> dict[str, Any]:
    """List "base" and every tuned adapter, as OpenAI's model list."""
    created = int(services.started)
    cards = [ModelCard(id=name, created=created) for name in services.generator.models()]
    return ModelList(data=cards).model_dump()


def _prepare_args(body: ChatCompletionRequest, services: Services) -> tuple[dict[str, Any], Params]:
    """Validate limits; the Assistant.prepare arguments and generation parameters."""
    api = services.api
    chat = [{"role": _ROLES.get(m.role, m.role), "content": m.text()} for m in body.messages]
    users = [m["content"] for m in chat if m["role"] == "user"]
    if not users:
        raise LimitError("`messages` needs at least one message with role `user`")
    check_text("messages[].content", users[-1], api)
    max_tokens = body.max_completion_tokens or body.max_tokens
    check_max_new_tokens("max_tokens", max_tokens, api)
    extension = body.ragtune
    use_rag = next((v for v in (extension and extension.use_rag, body.use_rag)
                    if v is not None), api.chat_rag_default)
    top_k = (extension.top_k if extension and extension.top_k else None) or body.top_k
    check_top_k(top_k, api)
    params = params_for(services.model(body.model), max_tokens, body.temperature or 0.0,
                        body.top_p or 1.0, body.stops(), body.seed)
    return dict(question=users[-1], use_rag=bool(use_rag), top_k=top_k, history=chat), params


def _finish_reason(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _completion(answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.answer}
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    return {"id": answer.id, "object": "chat.completion", "created": int(answer.created),
            "model": answer.model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": _finish_reason(answer.finish_reason)}],
            "usage": answer.usage, "sources": [s.to_dict() for s in answer.sources],
            "ragtune": _verdict(answer)}


def _verdict(answer: Answer) -> dict[str, Any]:
    """The `ragtune` extension field: the grounding verdict and, when the service replaced the
    generated text (streaming: the text already sent), the answer to show instead."""
    out = {"answer_kind": answer.answer_kind, "grounding": answer.grounding,
           "refused": answer.refused, "citations": answer.citations}
    if answer.generated:
        out["answer"] = answer.answer
    return out


@router.post("/chat/completions", responses=error_responses(*GENERATION_ERRORS))
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           services: ServicesDep) -> Any:
    """Chat completion over "base" or a tuned adapter; SSE chunks when `stream` is true."""
    prepare_args, params = _prepare_args(body, services)
    assistant = services.assistant
    prompt = await run_in_threadpool(lambda: assistant.prepare(**prepare_args))
    if body.stream:
        cancel = threading.Event()
        events = await run_in_threadpool(assistant.answer_stream, prompt, params, cancel)
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return SSEResponse(_chunks(prompt, params.model, events, cancel, usage), cancel)
    answer = await run_blocking(request, assistant.answer, prompt, params,
                                timeout_s=services.api.request_timeout_s)
    return _completion(answer)


async def _chunks(prompt: Prompt, model: str, events: Iterator[tuple[str, Any]],
                  cancel: threading.Event, include_usage: bool
                  ) -> AsyncIterator[ServerSentEvent]:
    """`chat.completion.chunk` events, the usage-only chunk if asked, then `[DONE]`."""
    base = {"id": prompt.id, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None,
              **extra: Any) -> ServerSentEvent:
        body = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}], **extra}
        if include_usage:
            body["usage"] = None
        return sse(body)

    yield chunk({"role": "assistant", "content": ""},
                sources=[s.to_dict() for s in prompt.sources])
    try:
        async for kind, value in iterate_blocking(events, cancel):
            if kind == "answer":
                yield chunk({"content": value})
            elif kind == "reasoning":
                yield chunk({"reasoning_content": value})
            elif kind == "done":
                yield chunk({}, _finish_reason(value.finish_reason), ragtune=_verdict(value))
                if include_usage:
                    yield sse({**base, "choices": [], "usage": value.usage})
    except Exception as err:  # noqa: BLE001 - headers are sent: report in-band, as OpenAI does
        yield sse(error_payload(err))
    yield sse("[DONE]")
