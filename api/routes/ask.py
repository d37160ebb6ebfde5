"""`POST /ask` (answers with sources, JSON or SSE) and `GET /generate` (the plain recipe)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sse_starlette import ServerSentEvent
from starlette.concurrency import run_in_threadpool

from serving.assistant import Prompt
from api.deps import (ServicesDep, check_max_new_tokens, check_text, check_top_k, params_for,
                      require_ask)
from api.errors import error_payload
from api.schemas import GENERATION_ERRORS, AskRequest, AskResponse, GenerateResponse, error_responses
from api.streaming import SSEResponse, iterate_blocking, run_blocking, sse

router = APIRouter(tags=["assistant"], dependencies=[Depends(require_ask)])

_STREAM_DOC = {200: {"content": {"text/event-stream": {"example": (
    'event: sources\ndata: {"type": "sources", "id": "…", "sources": […]}\n\n'
    'event: answer\ndata: {"type": "answer", "delta": "Employees get"}\n\n'
    'event: done\ndata: {"type": "done", "id": "…", "answer": "…", "sources": […]}\n\n')}}}}


@router.post("/ask", response_model=AskResponse,
             responses={**_STREAM_DOC, **error_responses(*GENERATION_ERRORS)})
async def ask(body: AskRequest, request: Request, services: ServicesDep) -> Any:
    """Answer a question from the documents, citing passages as [n] (SSE when stream=true)."""
    api = services.api
    check_text("question", body.question, api)
    check_top_k(body.top_k, api)
    check_max_new_tokens("max_new_tokens", body.max_new_tokens, api)
    params = params_for(services.model(body.model), body.max_new_tokens, body.temperature)
    assistant = services.assistant
    prompt = await run_in_threadpool(assistant.prepare, body.question.strip(),
                                     use_rag=body.use_rag, top_k=body.top_k)
    if body.stream:
        cancel = threading.Event()
        events = await run_in_threadpool(assistant.answer_stream, prompt, params, cancel)
        return SSEResponse(_ask_events(prompt, events, cancel), cancel)
    answer = await run_blocking(request, assistant.answer, prompt, params,
                                timeout_s=api.request_timeout_s)
    return answer.to_dict()


async def _ask_events(prompt: Prompt, events: Iterator[tuple[str, Any]],
                      cancel: threading.Event) -> AsyncIterator[ServerSentEvent]:
    """sources, then reasoning/answer deltas, then done (or error) as server-sent events."""
    yield sse({"type": "sources", "id": prompt.id,
               "sources": [s.to_dict() for s in prompt.sources]}, "sources")
    try:
        async for kind, value in iterate_blocking(events, cancel):
            if kind == "done":
                yield sse({"type": "done", **value.to_dict()}, "done")
            else:
                yield sse({"type": kind, "delta": value}, kind)
    except Exception as err:  # noqa: BLE001 - headers are sent: report in-band
        yield sse(error_payload(err), "error")


@router.get("/generate", response_model=GenerateResponse,
            responses=error_responses(*GENERATION_ERRORS))
async def generate(request: Request, services: ServicesDep,
                   prompt: str = Query(min_length=1, description="Text to continue / answer."),
                   max_new_tokens: int | None = Query(None, ge=1),
                   temperature: float = Query(0.0, ge=0.0, le=2.0),
                   model: str | None = Query(None)) -> dict[str, str]:
    """Generate from a bare prompt (no retrieval, no system prompt): {"generated_text": ...}."""
    api = services.api
    check_text("prompt", prompt, api)
    check_max_new_tokens("max_new_tokens", max_new_tokens, api)
    params = params_for(services.model(model), max_new_tokens, temperature)
    assistant = services.assistant
    chat = [{"role": "user", "content": prompt}]
    prepared = assistant.prepare(prompt, use_rag=False, history=chat)
    answer = await run_blocking(request, assistant.answer, prepared, params,
                                timeout_s=api.request_timeout_s)
    return {"generated_text": answer.answer}
