"""Answers the service gave, and a bounded in-memory store of the recent ones.

Every answer has an `id` (returned by `/ask` and as the `id` of `/v1/chat/completions`);
feedback keys on it, so the store keeps what feedback needs: question, context, model, answer.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ragtune.errors import NotFoundError
from ragtune.types import Hit

log = logging.getLogger(__name__)

MARKER = re.compile(r"\[(\d{1,3})\]")


@dataclass(frozen=True)
class Source:
    """A retrieved chunk shown to the model as passage `[n]`."""

    n: int
    source: str
    chunk_index: int
    section: str
    score: float
    text: str
    page: int | None = None  # 1-based PDF page (or image frame) the passage starts on
    row_start: int | None = None  # CSV/JSONL rows of the passage
    row_end: int | None = None
    ocr: bool = False  # the passage was read by OCR
    citation: str = ""  # "manual.pdf, p. 12, § 3.2"

    @classmethod
    def from_hit(cls, n: int, hit: Hit) -> Source:
        """Passage `[n]` from a retrieved chunk, its origin (page, rows, section) and citation kept."""
        c = hit.chunk
        return cls(n, c.source, c.position, c.section, round(hit.score, 6), c.text, page=c.page,
                   row_start=c.row_start, row_end=c.row_end, ocr=c.ocr, citation=c.citation())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Answer:
    """One answer with everything needed to show, cite, audit and give feedback on it."""

    id: str
    question: str
    answer: str
    reasoning: str
    sources: list[Source]
    model: str
    context: str = ""  # the passages as the model saw them ("" without retrieval)
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    finish_reason: str = "stop"
    refused: bool = False  # the "I don't know" answer (gate, grounding or the model itself)
    created: float = field(default_factory=time.time)
    answer_kind: str = "generated"  # generated | extracted | refused
    grounding: dict[str, Any] = field(default_factory=dict)  # serving.grounding.Grounding
    generated: str = ""  # the model's own text when the answer replaced it (audit, feedback)

    @property
    def citations(self) -> list[int]:
        """The `[n]` markers in the answer that point at a returned source."""
        valid = {s.n for s in self.sources}
        return sorted({int(m) for m in MARKER.findall(self.answer)} & valid)

    def to_dict(self) -> dict[str, Any]:
        """The `/ask` response body."""
        return {"id": self.id, "answer": self.answer, "reasoning": self.reasoning,
                "sources": [s.to_dict() for s in self.sources], "citations": self.citations,
                "model": self.model, "usage": self.usage, "timings": self.timings,
                "finish_reason": self.finish_reason, "refused": self.refused,
                "answer_kind": self.answer_kind, "grounding": self.grounding,
                "generated": self.generated}


Listener = Callable[[Answer], None]


class AnswerStore:
    """Thread-safe LRU of recent answers, keyed by answer id.

    Listeners (`subscribe`) see every added answer: the feedback store persists answers with
    one, so that feedback on them still works after the LRU evicts them or the server restarts.
    """

    def __init__(self, capacity: int = 1000, listeners: list[Listener] | None = None) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Answer] = OrderedDict()
        self._lock = threading.Lock()
        self._listeners: list[Listener] = list(listeners or [])

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(answer)` for every answer added from now on (idempotent)."""
        with self._lock:
            if listener not in self._listeners:
                self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def add(self, answer: Answer) -> None:
        with self._lock:
            self._items[answer.id] = answer
            self._items.move_to_end(answer.id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(answer)
            except Exception:  # noqa: BLE001 - an answer is never lost for a listener's fault
                log.exception("answer listener %r failed for answer %s", listener, answer.id)

    def get(self, answer_id: str) -> Answer:
        """The answer with this id, or `NotFoundError` (unknown or already evicted)."""
        with self._lock:
            found = self._items.get(answer_id)
        if found is None:
            raise NotFoundError(f"no recent answer with id {answer_id!r} "
                                f"(the last {self.capacity} answers are kept)")
        return found

    def recent(self, limit: int = 20) -> list[Answer]:
        """The newest answers first."""
        with self._lock:
            return list(reversed(self._items.values()))[:limit]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, answer_id: object) -> bool:
        return answer_id in self._items
