"""The self generator: the local generator model (any `ragtune.types.Generator`) writes pairs.

Weak with the 135M CPU default, useful with bigger models; replies that are not the JSON asked
for count as failed chunks, and answers the chunk does not support are dropped by the quality
stage like every other generator's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ingest.pairs.base import PairGenerator, Progress, QAPair
from ingest.pairs.llm import PROMPT_VERSION, pair_messages, parse_pairs, to_pairs
from ragtune.errors import RagtuneError
from ragtune.types import Chunk, GenerationRequest, Generator

log = logging.getLogger(__name__)


class SelfGenerator(PairGenerator):
    """Pairs written by a local `Generator` in batches."""

    name = "self"

    def __init__(self, generator: Generator, model_id: str, *, max_pairs: int = 6,
                 max_new_tokens: int = 384, batch_size: int = 4, model: str = "base",
                 owns_generator: bool = False) -> None:
        self.generator, self.model_id, self.model = generator, model_id, model
        self.owns_generator = owns_generator
        self.max_pairs, self.max_new_tokens, self.batch_size = max_pairs, max_new_tokens, batch_size

    @property
    def fingerprint(self) -> str:
        return f"self:{self.model_id}:{self.model}:v{PROMPT_VERSION}:n{self.max_pairs}"

    def generate(self, chunks: Sequence[Chunk], progress: Progress | None = None
                 ) -> dict[int, list[QAPair]]:
        out: dict[int, list[QAPair]] = {}
        for start in range(0, len(chunks), self.batch_size):
            batch = list(chunks[start:start + self.batch_size])
            requests = [GenerationRequest(pair_messages(c, self.max_pairs), model=self.model,
                                          max_new_tokens=self.max_new_tokens, temperature=0.0)
                        for c in batch]
            try:
                results = self.generator.generate(requests)
            except RagtuneError as err:  # e.g. a generation timeout: these chunks failed
                log.warning("self: %d chunks failed: %s", len(batch), err)
                results = []
            for chunk, result in zip(batch, results, strict=False):
                try:
                    out[chunk.id] = to_pairs(chunk, parse_pairs(result.text), "self",
                                             self.max_pairs)
                except ValueError as err:
                    log.info("self: chunk %s:%s gave no valid JSON: %s", chunk.source,
                             chunk.position, err)
            if progress:
                progress(len(batch))
        return out

    def close(self) -> None:
        """Release the local model when this generator loaded it."""
        if self.owns_generator:
            self.generator.close()
