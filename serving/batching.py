"""Dynamic batching pieces: queued jobs, the bounded queue that groups them, and the per-row
tracker that stops, streams and accounts each row of a batched `generate` on its own.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria

from ragtune.errors import BusyError
from ragtune.types import GenerationRequest, GenerationResult

GroupKey = tuple[str, float, float, int | None]


@dataclass(eq=False)
class Job:
    """One queued request: its prompt ids, cancel flags, deadline and where results go."""

    request: GenerationRequest
    prompt_ids: list[int]
    deadline: float
    think: bool = False  # the prompt opened `<think>`: prefix it to the output
    cancels: list[threading.Event] = field(default_factory=list)
    future: Future = field(default_factory=Future)
    deltas: queue.SimpleQueue | None = None  # streaming: str deltas, then result or exception

    @property
    def key(self) -> GroupKey:
        """Jobs with equal keys can share one `generate` call (same weights, same sampling)."""
        req = self.request
        if req.temperature <= 0:
            return (req.model, 0.0, 1.0, req.seed)
        return (req.model, float(req.temperature), float(req.top_p), req.seed)

    def cancelled(self) -> bool:
        return any(event.is_set() for event in self.cancels)

    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def finish(self, outcome: GenerationResult | BaseException) -> None:
        """Resolve the future (once) and close the stream, if any."""
        if self.future.done():
            return
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)
        if self.deltas is not None:
            self.deltas.put(outcome)


class JobQueue:
    """A bounded FIFO that hands out groups of jobs sharing a key, waiting briefly for company."""

    def __init__(self, max_queue: int, max_batch: int, wait_s: float) -> None:
        self.max_queue, self.max_batch, self.wait_s = max_queue, max_batch, wait_s
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._group_seconds = 1.0  # moving average, for Retry-After

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, job: Job) -> None:
        """Queue a job, or raise `BusyError` when the queue is full."""
        with self._cond:
            if self._closed:
                raise BusyError("the generator is shutting down", retry_after=5)
            if len(self._pending) >= self.max_queue:
                waves = len(self._pending) / self.max_batch
                retry = max(1, math.ceil(self._group_seconds * waves))
                raise BusyError(f"the generation queue is full ({len(self._pending)} waiting); "
                                f"retry in {retry} s", retry_after=retry)
            self._pending.append(job)
            self._cond.notify_all()

    def next_group(self) -> list[Job] | None:
        """Block for the oldest job, gather up to `max_batch` of its kind; None once closed."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            key = self._pending[0].key
            end = time.monotonic() + self.wait_s
            while True:
                same = [job for job in self._pending if job.key == key]
                remaining = end - time.monotonic()
                if len(same) >= self.max_batch or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            group = same[: self.max_batch]
            for job in group:
                self._pending.remove(job)
            return group

    def record(self, seconds: float) -> None:
        self._group_seconds = 0.8 * self._group_seconds + 0.2 * seconds

    def close(self) -> list[Job]:
        """Stop handing out work; return the jobs still waiting."""
        with self._cond:
            self._closed = True
            left = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
            return left


@dataclass(eq=False)
class Row:
    """Generation state of one job inside a batch."""

    job: Job
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None  # stop | length | cancelled | timeout
    emitted: str = ""


class BatchTracker(StoppingCriteria):
    """Stopping criterion that follows every row: EOS, its own token limit, stop strings,
    cancel flag and deadline; it also streams each row's new text to its job."""

    def __init__(self, jobs: Sequence[Job], eos_ids: set[int],
                 decode: Callable[[list[int]], str]) -> None:
        self.rows = [Row(job) for job in jobs]
        self.eos_ids = eos_ids
        self.decode = decode

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor,
                 **kwargs: object) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, last, strict=True):
            if row.finish is None:
                self._step(row, token)
        done = [row.finish is not None for row in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _step(self, row: Row, token: int) -> None:
        req = row.job.request
        if token in self.eos_ids:
            row.finish = "stop"
        else:
            row.tokens.append(token)
        if req.stop or row.job.deltas is not None:
            text, hit = self._visible(row)
            if hit:
                row.finish = "stop"
            if row.job.deltas is not None and text.startswith(row.emitted) \
                    and len(text) > len(row.emitted):
                row.job.deltas.put(text[len(row.emitted):])
                row.emitted = text
        if row.finish is None:
            if len(row.tokens) >= req.max_new_tokens:
                row.finish = "length"
            elif row.job.cancelled():
                row.finish = "cancelled"
            elif row.job.expired():
                row.finish = "timeout"

    def _visible(self, row: Row) -> tuple[str, bool]:
        """The row's text that is safe to show, and whether a stop string was hit."""
        text = self.text(row)
        stops = row.job.request.stop
        cut = min((text.find(s) for s in stops if s and s in text), default=-1)
        if cut >= 0:
            return text[:cut], True
        if text.endswith("\ufffd"):  # half of a multi-byte character
            text = text.rstrip("\ufffd")
        hold = max((_overlap(text, s) for s in stops if s), default=0)
        return text[: len(text) - hold], False

    def text(self, row: Row) -> str:
        prefix = "<think>\n" if row.job.think else ""
        return prefix + self.decode(row.tokens)

    def result(self, row: Row) -> GenerationResult:
        """The final result of a row (cut at the first stop string, finish reason mapped)."""
        text = self.text(row)
        cut = min((text.find(s) for s in row.job.request.stop if s and s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
        finish = {"stop": "stop", "length": "length"}.get(row.finish or "length", "cancelled")
        return GenerationResult(text, len(row.job.prompt_ids), len(row.tokens),
                                finish)  # type: ignore[arg-type]

    def flush(self, row: Row, result: GenerationResult) -> None:
        """Send a streaming row the text held back so far (partial characters, stop prefixes)."""
        if row.job.deltas is not None and result.text.startswith(row.emitted) \
                and len(result.text) > len(row.emitted):
            row.job.deltas.put(result.text[len(row.emitted):])
            row.emitted = result.text


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0
