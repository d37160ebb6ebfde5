"""Alpaca rows from QA pairs: closed-book rows and RAFT context rows (Zhang et al. 2024).

A context row's user turn is `ragtune.prompts.user_prompt(question, passages)`, the layout /ask
uses at serving time: the oracle chunk among k distractor chunks, in shuffled order.
Distractors are the retriever's own near misses for the question (hard negatives: the index's
top hits other than the oracle, never a chunk that holds the answer), filled up with random
chunks of other documents; so a row looks like what retrieval hands the model at serving time.
The oracle is kept in a fraction `oracle_p` of rows; its answer comes first with its [n]
marker, then the supporting sentence (`cited_answer`). Rows without the oracle hold k+1
distractors, so every row has the same number of passages as a retrieval; by default they
teach the NO_ANSWER sentence (`no_oracle_answer="refuse"`): an answer the passages do not hold
is exactly what the grounding check rejects at serving time, so the model must learn to say it
does not know. `ground_truth` (RAFT's original) still answers from memory.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from ingest.pairs.base import QAPair
from ingest.pairs.config import PairsConfig
from ragtune.prompts import NO_ANSWER, NO_ANSWER_ZH, cited_answer, is_chinese, user_prompt
from ragtune.types import Chunk


def row(instruction: str, output: str, system: str | None, source: str, kind: str) -> dict:
    """One alpaca row (LLaMA-Factory drops the extra `source` and `kind` columns)."""
    return {"instruction": instruction, "input": "", "output": output, "system": system or "",
            "source": source, "kind": kind}


def pair_rng(cfg: PairsConfig, pair: QAPair) -> random.Random:
    """A generator seeded by the run seed and the pair, so unchanged pairs get the same sample."""
    return random.Random(f"{cfg.seed}\x00{pair.source}\x00{pair.position}\x00{pair.question}")


Search = Callable[[str, int], Sequence[Chunk]]


class DistractorPool:
    """All chunks, for drawing distractors: the retriever's hard negatives for the question
    first (when a `search` is given), then random chunks of other documents, then of its own."""

    def __init__(self, chunks: Sequence[Chunk], search: Search | None = None,
                 hard: int | None = None) -> None:
        self.chunks = list(chunks)
        self.search, self.hard = search, hard

    def draw(self, oracle: Chunk, k: int, rng: random.Random, question: str = "",
             answer: str = "") -> list[Chunk]:
        """k chunks other than the oracle, none holding the answer text."""
        def usable(c: Chunk) -> bool:
            return c.id != oracle.id and not (answer and answer.strip() in c.text)

        picked: list[Chunk] = []
        if self.search is not None and question:
            hard = k if self.hard is None else min(self.hard, k)
            picked = [c for c in self.search(question, k + 4) if usable(c)][:hard]
        order = list(range(len(self.chunks)))
        rng.shuffle(order)
        taken = {c.id for c in picked}
        other = [self.chunks[i] for i in order if self.chunks[i].source != oracle.source]
        same = [self.chunks[i] for i in order if self.chunks[i].source == oracle.source]
        fill = [c for c in other + same if usable(c) and c.id not in taken]
        return (picked + fill)[:k]


def plain_row(pair: QAPair, system: str | None) -> dict:
    """Closed-book row: the question alone, the full answer."""
    return row(user_prompt(pair.question), pair.answer, system, pair.source, "plain")


def context_row(pair: QAPair, oracle: Chunk, pool: DistractorPool, cfg: PairsConfig,
                system: str | None) -> dict:
    """RAFT row: oracle (kept with probability oracle_p) among distractors, cited answer."""
    rng = pair_rng(cfg, pair)
    keep = rng.random() < cfg.oracle_p
    passages = pool.draw(oracle, cfg.distractors + (0 if keep else 1), rng, pair.question,
                         pair.short or pair.answer)
    if keep:
        passages.append(oracle)
        rng.shuffle(passages)
        n = next(i for i, p in enumerate(passages, start=1) if p.id == oracle.id)
        output = cited_answer(pair.short or pair.answer, n, pair.quote)
        kind = "context"
    else:
        if cfg.no_oracle_answer == "refuse":
            output = NO_ANSWER_ZH if is_chinese(pair.question) else NO_ANSWER
        else:
            output = pair.answer
        kind = "context_no_oracle"
    return row(user_prompt(pair.question, passages), output, system, pair.source, kind)


def rows_for_pairs(pairs: Sequence[tuple[QAPair, Chunk]], pool: DistractorPool,
                   cfg: PairsConfig, system: str | None) -> list[dict]:
    """Plain and/or context rows for each (pair, oracle chunk), per `cfg.mode`."""
    out: list[dict] = []
    for pair, chunk in pairs:
        where = origin(chunk)
        if cfg.mode in ("plain", "both"):
            out.append({**plain_row(pair, system), **where})
        if cfg.mode in ("context", "both"):
            out.append({**context_row(pair, chunk, pool, cfg, system), **where})
    return out


def origin(chunk: Chunk) -> dict:
    """Where the oracle chunk came from, kept as extra columns of the row (page, rows, section, citation)."""
    return {"page": chunk.page, "row_start": chunk.row_start, "row_end": chunk.row_end,
            "section": chunk.section, "citation": chunk.citation()}
