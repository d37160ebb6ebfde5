"""Cancellable generation on top of the shared `Generator` interface.

`Engine` is a `Generator` whose calls take a cancel flag (a client went away, a timeout hit)
and whose streams end with a `GenerationResult` carrying token usage. `complete` and
`stream_events` accept any `Generator` (the fakes included), so the Assistant and the HTTP
routes have one code path.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Iterator, Sequence

from ragtune.errors import ModelNotFoundError, RagtuneError
from ragtune.types import GenerationRequest, GenerationResult, Generator


class GenerationTimeout(RagtuneError):
    """A generation ran past the request timeout."""

    http_status = 504


class UpstreamError(RagtuneError):
    """The OpenAI-compatible upstream server failed or could not be reached."""

    http_status = 502


class Engine(Generator):
    """A `Generator` with cancellation and usage-reporting streams."""

    @abstractmethod
    def complete(self, request: GenerationRequest,
                 cancel: threading.Event | None = None) -> GenerationResult:
        """Run one request (blocking); a set `cancel` stops it early."""

    @abstractmethod
    def stream_events(self, request: GenerationRequest, cancel: threading.Event | None = None
                      ) -> Iterator[str | GenerationResult]:
        """Text deltas, then one final `GenerationResult` (blocking iterator).

        Implementations start the request when called (not on the first `next`), so that
        errors such as a full queue surface before a streamed response begins.
        """

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [self.complete(r) for r in requests]

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        for item in self.stream_events(request):
            if isinstance(item, str):
                yield item

    def check_model(self, name: str) -> None:
        """Raise `ModelNotFoundError` unless `name` is one of `models()`."""
        check_model(self, name)


def check_model(generator: Generator, name: str) -> None:
    """Raise `ModelNotFoundError` unless the generator serves a model called `name`."""
    known = generator.models()
    if name not in known:
        raise ModelNotFoundError(f"unknown model {name!r}; available: {', '.join(known)}")


def cancelled_result() -> GenerationResult:
    return GenerationResult("", 0, 0, "cancelled")


def complete(generator: Generator, request: GenerationRequest,
             cancel: threading.Event | None = None) -> GenerationResult:
    """One request on any generator, cancellable where the generator supports it."""
    if isinstance(generator, Engine):
        return generator.complete(request, cancel)
    if cancel is not None and cancel.is_set():
        return cancelled_result()
    return generator.generate([request])[0]


def stream_events(generator: Generator, request: GenerationRequest,
                  cancel: threading.Event | None = None) -> Iterator[str | GenerationResult]:
    """Deltas then a final result, for any generator (usage estimated for plain ones).

    An `Engine` queues the request at call time, so a full queue raises here, before the
    caller has started a streamed response.
    """
    if isinstance(generator, Engine):
        return generator.stream_events(request, cancel)
    return _plain_stream(generator, request, cancel)


def _plain_stream(generator: Generator, request: GenerationRequest,
                  cancel: threading.Event | None) -> Iterator[str | GenerationResult]:
    parts: list[str] = []
    finish = "stop"
    for delta in generator.stream(request):
        if cancel is not None and cancel.is_set():
            finish = "cancelled"
            break
        parts.append(delta)
        yield delta
    prompt_tokens = sum(len(m["content"].split()) for m in request.messages)
    yield GenerationResult("".join(parts), prompt_tokens, len(parts),
                           finish)  # type: ignore[arg-type]
