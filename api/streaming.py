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
from starlette.responses import StreamingResponse
from starlette.types import Send

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


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event: optional `event:` line, a `data:` line, a blank line."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"


class SSEResponse(StreamingResponse):
    """A `text/event-stream` response that sets `cancel` however it ends (disconnect included)."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], cancel: threading.Event) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.cancel = cancel

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            self.cancel.set()
