"""Continuous-batching pieces: queued jobs, the bounded queue the worker takes them from, and
the per-row state that stops, streams and accounts each row of a running batch on its own.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ragtune.errors import BusyError
from ragtune.types import GenerationRequest, GenerationResult
from serving.repeats import RepeatBan

@dataclass(eq=False)
class Job:
    """One queued request: its prompt ids, cancel flags, deadline and where results go."""

    request: GenerationRequest
    prompt_ids: list[int]
    deadline: float
    think: bool = False  # the prompt opened `<think>`: prefix it to the output
    prefix_len: int = 0  # leading prompt ids shared by many prompts (the system prompt)
    cancels: list[threading.Event] = field(default_factory=list)
    future: Future = field(default_factory=Future)
    deltas: queue.SimpleQueue | None = None  # streaming: str deltas, then result or exception
    banned_first: tuple[int, ...] = ()  # token ids the first generated token may not be

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
    """A bounded FIFO of jobs waiting for a batch slot.

    Jobs whose client left (cancelled) or whose deadline passed leave the queue as soon as
    anyone looks at it (`put`, `take`, `len`), so they never hold a slot that a waiting
    client could use; `discard` removes one at once when its cancel flag is set here.
    """

    def __init__(self, max_queue: int, wait_s: float,
                 on_dropped: Callable[[Job], None]) -> None:
        self.max_queue, self.wait_s = max_queue, wait_s
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._on_dropped = on_dropped  # resolves a job that left while queued
        self._job_seconds = 1.0  # moving average of one job's service time, for Retry-After
        self._slots = 1

    def __len__(self) -> int:
        with self._cond:
            self._purge()
            return len(self._pending)

    def _purge(self) -> None:
        """Drop (and resolve) queued jobs nobody waits for any more. Caller holds the lock."""
        if any(job.cancelled() or job.expired() for job in self._pending):
            gone = [job for job in self._pending if job.cancelled() or job.expired()]
            self._pending = deque(job for job in self._pending if job not in gone)
            for job in gone:
                self._on_dropped(job)

    def put(self, job: Job) -> None:
        """Queue a job, or raise `BusyError` when the queue is full."""
        with self._cond:
            if self._closed:
                raise BusyError("the generator is shutting down", retry_after=5)
            self._purge()
            if len(self._pending) >= self.max_queue:
                waves = len(self._pending) / max(self._slots, 1)
                retry = max(1, math.ceil(self._job_seconds * waves))
                raise BusyError(f"the generation queue is full ({len(self._pending)} waiting); "
                                f"retry in {retry} s", retry_after=retry)
            self._pending.append(job)
            self._cond.notify_all()

    def discard(self, job: Job) -> None:
        """Take a job out of the queue now (its consumer left); no-op once it runs."""
        with self._cond:
            if job in self._pending:
                self._pending.remove(job)
                self._on_dropped(job)

    def take(self, slots: int, block: bool) -> list[Job] | None:
        """Up to `slots` oldest jobs. With `block` (the worker is idle) wait for the first,
        then `wait_s` for company; None once closed."""
        self._slots = max(slots, self._slots)
        with self._cond:
            self._purge()
            if block:
                while not self._pending and not self._closed:
                    self._cond.wait()
                end = time.monotonic() + self.wait_s
                while len(self._pending) < slots and not self._closed \
                        and (remaining := end - time.monotonic()) > 0:
                    self._cond.wait(remaining)
            if self._closed:
                return None
            self._purge()
            return [self._pending.popleft() for _ in range(min(slots, len(self._pending)))]

    def record(self, seconds: float) -> None:
        """One job's time from start to finish (feeds the Retry-After estimate)."""
        self._job_seconds = 0.8 * self._job_seconds + 0.2 * seconds

    def close(self) -> list[Job]:
        """Stop handing out work; return the jobs still waiting."""
        with self._cond:
            self._closed = True
            left = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
            return left


@dataclass(frozen=True)
class Rules:
    """What ends a row besides its own request: the model's EOS ids, the token decoder and the
    repetition guard (`repeat_window` tokens that repeat a unit of at most a quarter of that
    length; 0 turns it off); and what a row may not write: `ban`, the repeat ban of
    `serving.repeats` (back-to-back copies and near loops; None: off)."""

    eos_ids: frozenset[int]
    decode: Callable[[list[int]], str]
    repeat_window: int = 0
    ban: RepeatBan | None = None


def is_looping(tokens: list[int], window: int) -> bool:
    """True when the last `window` tokens repeat one unit of 1..window/4 tokens, i.e. the text
    ends in at least four back-to-back copies of it (`[4] [4] [4] [4] ...`). Normal prose
    never does that over a window of 32 tokens; a degenerate loop always does."""
    if window <= 0 or len(tokens) < window + 1:
        return False
    tail = tokens[-window:]
    return any(len(tokens) >= window + period and tail == tokens[-window - period:-period]
               for period in range(1, window // 4 + 1))


@dataclass(eq=False)
class Row:
    """Generation state of one job inside the running batch: its tokens, why it finished,
    and the text streamed so far."""

    job: Job
    rules: Rules
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None  # stop | length | repetition | cancelled | timeout | error
    emitted: str = ""
    rng: Any = None  # a seeded torch.Generator for sampled rows; None: greedy
    error: BaseException | None = None
    started: float = field(default_factory=time.monotonic)

    def step(self, token: int) -> None:
        """Account one new token: EOS, stop strings, streaming, limits, cancel and deadline."""
        req = self.job.request
        if token in self.rules.eos_ids:
            self.finish = "stop"
        else:
            self.tokens.append(token)
        if req.stop or self.job.deltas is not None:
            text, hit = self._visible()
            if hit:
                self.finish = "stop"
            if self.job.deltas is not None and text.startswith(self.emitted) \
                    and len(text) > len(self.emitted):
                self.job.deltas.put(text[len(self.emitted):])
                self.emitted = text
        if self.finish is None:
            if len(self.tokens) >= req.max_new_tokens:
                self.finish = "length"
            elif is_looping(self.tokens, self.rules.repeat_window):
                self.finish = "repetition"
            else:
                self.check_alive()

    def check_alive(self) -> bool:
        """Mark the row cancelled / timed out when its client left or its deadline passed."""
        if self.finish is None:
            if self.job.cancelled():
                self.finish = "cancelled"
            elif self.job.expired():
                self.finish = "timeout"
        return self.finish is None

    def _visible(self) -> tuple[str, bool]:
        """The row's text that is safe to show, and whether a stop string was hit."""
        text = self.text()
        stops = self.job.request.stop
        cut = min((text.find(s) for s in stops if s and s in text), default=-1)
        if cut >= 0:
            return text[:cut], True
        if text.endswith("\ufffd"):  # half of a multi-byte character
            text = text.rstrip("\ufffd")
        hold = max((_overlap(text, s) for s in stops if s), default=0)
        return text[: len(text) - hold], False

    def text(self) -> str:
        prefix = "<think>\n" if self.job.think else ""
        return prefix + self.rules.decode(self.tokens)

    def result(self) -> GenerationResult:
        """The final result (cut at the first stop string, finish reason mapped)."""
        text = self.text()
        cut = min((text.find(s) for s in self.job.request.stop if s and s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
        finish = {"stop": "stop", "length": "length", "repetition": "stop"}.get(
            self.finish or "length", "cancelled")
        return GenerationResult(text, len(self.job.prompt_ids), len(self.tokens),
                                finish)  # type: ignore[arg-type]

    def flush(self, result: GenerationResult) -> None:
        """Send a streaming row the text held back so far (partial characters, stop prefixes)."""
        if self.job.deltas is not None and result.text.startswith(self.emitted) \
                and len(result.text) > len(self.emitted):
            self.job.deltas.put(result.text[len(self.emitted):])
            self.emitted = result.text


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0
