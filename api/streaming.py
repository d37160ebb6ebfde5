"""Running blocking work from async routes: off the event loop, with timeouts, and stopped
when the client goes away (non-streamed: disconnect polling; streamed: the SSE response ends).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from serving.generation import GenerationTimeout

T = TypeVar("T")
_DONE = object()


async def run_blocking(request: Request, fn: Callable[..., T], *args: Any,
                       timeout_s: float, **kwargs: Any) -> T:
    """Run `fn(*args, cancel=event, **kwargs)` in a worker thread; set the event if the
    client disconnects or `timeout_s` passes (then raise `GenerationTimeout`)."""
    cancel = threading.Event()
    call = partial(fn, *args, cancel=cancel, **kwargs)
    task = asyncio.ensure_future(anyio.to_thread.run_sync(call, abandon_on_cancel=True))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=min(0.25, max(deadline - loop.time(), 0)))
            if task.done():
                break
            if loop.time() >= deadline:
                raise GenerationTimeout(f"no answer within {timeout_s:g} s (request_timeout_s)")
            if await request.is_disconnected():
                cancel.set()
        return task.result()
    finally:
        if not task.done():
            cancel.set()
            task.cancel()


async def iterate_blocking(iterator: Iterator[T], cancel: threading.Event) -> AsyncIterator[T]:
    """Pull a blocking iterator from worker threads; leaving early sets `cancel`."""
    try:
        while True:
            item = await anyio.to_thread.run_sync(next, iterator, _DONE, abandon_on_cancel=True)
            if item is _DONE:
                return
            yield item  # type: ignore[misc]
    finally:
        cancel.set()


# `\n` line ends: the OpenAI wire format (`data: {...}\n\n` ... `data: [DONE]\n\n`), which
# OpenAI clients and LangChain parse; sse-starlette's default is `\r\n`.
SEP = "\n"


def sse(data: Any, event: str | None = None) -> ServerSentEvent:
    """One server-sent event: optional `event:` line, a `data:` line (JSON unless a string),
    a blank line. sse-starlette frames it."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return ServerSentEvent(payload, event=event, sep=SEP)


class SSEResponse(EventSourceResponse):
    """sse-starlette's `text/event-stream` response (keep-alive comment pings during long
    silences, client disconnects noticed), setting `cancel` however it ends, so that the
    generation stops when nobody reads it any more."""

    def __init__(self, content: AsyncIterator[ServerSentEvent], cancel: threading.Event) -> None:
        super().__init__(content, sep=SEP, headers={"Cache-Control": "no-cache"})
        self.cancel = cancel

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.cancel.set()
