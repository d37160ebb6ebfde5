"""The pair-generator interface and the question/answer value it produces."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from ragtune.types import Chunk


@dataclass(frozen=True)
class QAPair:
    """A question answerable from one chunk, its answer, and the chunk sentence that supports it."""

    question: str
    answer: str  # a full answer, used as is in closed-book pairs
    quote: str  # the supporting sentence of the chunk (quoted in RAFT answers)
    source: str
    position: int  # the chunk's position in its document
    rule: str  # how it was made: "definition", "number", "teacher", ...
    short: str = ""  # a short answer for RAFT answers ("27 days"); "" = use `answer`

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> QAPair:
        return cls(**data)


Progress = Callable[[int], None]


class PairGenerator(ABC):
    """Writes question/answer pairs for chunks. `fingerprint` keys the per-document cache."""

    name: str = "base"

    @property
    def fingerprint(self) -> str:
        """Everything that changes the output (generator, model, prompt version, limits)."""
        return self.name

    @abstractmethod
    def generate(self, chunks: Sequence[Chunk], progress: Progress | None = None
                 ) -> dict[int, list[QAPair]]:
        """Pairs per chunk id; a chunk missing from the result failed (it is not cached)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients, threads or models."""
