"""Shared value types and the three pluggable interfaces: Embedder, Retriever, Generator.

Each interface has a real implementation in its stage package and a small deterministic
fake in `tests.fakes` for fast tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

SearchMode = Literal["hybrid", "dense", "bm25"]


@dataclass(frozen=True)
class Chunk:
    """A piece of a document as stored in the index."""

    id: int
    source: str  # document path as given to ingest (relative when possible)
    position: int  # 0-based index of the chunk within its document
    section: str  # heading path, e.g. "Handbook > Safety > Fire drills" ("" when none)
    text: str
    page: int | None = None  # 1-based PDF page (or image frame) the chunk starts on
    row_start: int | None = None  # CSV/JSONL rows the chunk holds (a CSV header is row 1)
    row_end: int | None = None
    ocr: bool = False  # the text was recognised from an image (OCR), not read from a text layer

    def citation(self) -> str:
        """Where the chunk came from, as a reader cites it: "manual.pdf, p. 12, § Setup > 3.2"."""
        return cite(self.source, self.section, self.page, self.row_start, self.row_end)


def cite(source: str, section: str = "", page: int | None = None, row_start: int | None = None,
         row_end: int | None = None) -> str:
    """A citation string from a chunk's origin fields (shared by the API's sources and the UI)."""
    parts = [source.rsplit("/", 1)[-1] or source]
    if page is not None:
        parts.append(f"p. {page}")
    if row_start is not None:
        parts.append(f"row {row_start}" if row_end in (None, row_start) else f"rows {row_start}-{row_end}")
    if section:
        parts.append(f"§ {section}")
    return ", ".join(parts)


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its score (higher is better; meaning depends on the mode)."""

    chunk: Chunk
    score: float


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    @property
    def name(self) -> str:
        """Stable identity recorded in the index (model id + revision/hash)."""

    @property
    def dim(self) -> int:
        """Vector dimension."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape (len(texts), dim), dtype float32, rows of unit norm."""


class Retriever(ABC):
    """Finds the chunks most relevant to a query."""

    @abstractmethod
    def search(self, query: str, k: int = 5, mode: SearchMode = "hybrid") -> list[Hit]:
        """Return up to k hits, best first."""


ChatMessage = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass
class GenerationRequest:
    """One chat completion to run; `model` is "base" or an adapter name."""

    messages: list[ChatMessage]
    model: str = "base"
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # Texts the reply may not open with: its first token may not start with one (leading
    # spaces aside). A cited RAG answer opens with the answer, never with "[": a tuned model that
    # does is continuing the context list ("[5] docs/x.html › Chapter 7 …").
    banned_openings: tuple[str, ...] = ()


@dataclass
class GenerationResult:
    """Generated text with token accounting. `finish_reason` is "stop" or "length"."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length", "cancelled"] = "stop"


class Generator(ABC):
    """A chat model (base plus optional adapters) that can generate in batches and stream."""

    @abstractmethod
    def models(self) -> list[str]:
        """Names accepted as `GenerationRequest.model`: "base" first, then adapters."""

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Run a batch of requests (blocking). Results are in request order."""

    @abstractmethod
    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Yield text deltas for one request (blocking iterator)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, models)."""
