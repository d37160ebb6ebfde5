"""Quality gate for generated pairs: length limits, support by the chunk, eval leaks, duplicates.

Each rejected pair is counted by reason, so the stats line of a run says what was dropped and
why. Near-duplicates are found by character-trigram Jaccard through an inverted index, which
works the same for English and Chinese.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from ingest.pairs.base import QAPair
from ingest.pairs.config import PairsConfig
from ingest.pairs.text import best_sentence, is_supported, normalise, shingles
from ragtune.errors import DatasetError
from ragtune.prompts import is_chinese
from ragtune.types import Chunk

log = logging.getLogger(__name__)


def _key(text: str) -> str:
    """Exact-duplicate key: normalised, spaces dropped ("1 年" and "1年" are the same)."""
    return normalise(text).replace(" ", "")


class NearDupIndex:
    """Texts seen so far; `match` finds an exact or near-duplicate of a new text."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._exact: dict[str, int] = {}
        self._grams: list[set[str]] = []
        self._postings: dict[str, list[int]] = defaultdict(list)

    def add(self, text: str) -> None:
        idx = len(self._grams)
        grams = shingles(text)
        self._exact.setdefault(_key(text), idx)
        self._grams.append(grams)
        for g in grams:
            self._postings[g].append(idx)

    def match(self, text: str) -> str | None:
        """"exact", "near" or None."""
        if _key(text) in self._exact:
            return "exact"
        grams = shingles(text)
        shared: Counter[int] = Counter()
        for g in grams:
            shared.update(self._postings.get(g, ()))
        for idx, n in shared.most_common(20):
            union = len(grams) + len(self._grams[idx]) - n
            if union and n / union >= self.threshold:
                return "near"
        return None

    def __len__(self) -> int:
        return len(self._grams)


def load_eval_questions(path: str | Path) -> list[str]:
    """Questions of an eval file (.jsonl with a "question" field, or a JSON array of rows)."""
    path = Path(path)
    if not path.is_file():
        return []
    from ragtune.datasets import read_rows

    out = []
    for row, data in read_rows(path):
        if not isinstance(data, dict) or not isinstance(data.get("question"), str):
            raise DatasetError(path, "eval rows need a string `question`", row=row,
                               field="question")
        out.append(data["question"])
    return out


class QualityFilter:
    """Keeps pairs that are within limits, supported, not in the eval set and not duplicates."""

    def __init__(self, cfg: PairsConfig, eval_questions: Iterable[str] = ()) -> None:
        self.cfg = cfg
        self.rejected: Counter[str] = Counter()
        self._seen = NearDupIndex(cfg.near_dup_threshold)
        self._eval = NearDupIndex(cfg.near_dup_threshold)
        for q in eval_questions:
            self._eval.add(q)

    def _length_problem(self, pair: QAPair) -> str | None:
        q_len = len(pair.question.strip())
        min_q = max(self.cfg.min_question_chars // 2, 2) if is_chinese(pair.question) else (
            self.cfg.min_question_chars)
        if q_len < min_q or not pair.answer.strip():
            return "too_short"
        if q_len > self.cfg.max_question_chars or len(pair.answer) > self.cfg.max_answer_chars:
            return "too_long"
        return None

    def check(self, pair: QAPair, chunk: Chunk) -> tuple[QAPair | None, str | None]:
        """(the pair, possibly with a corrected quote, None) or (None, the rejection reason)."""
        problem = self._length_problem(pair)
        if problem:
            return None, problem
        context = f"{chunk.section}\n{chunk.text}"
        if not is_supported(pair.answer, context, self.cfg.support_threshold):
            return None, "unsupported"
        if self._eval.match(pair.question):
            return None, "eval_leak"
        dup = self._seen.match(pair.question)
        if dup:
            return None, "duplicate" if dup == "exact" else "near_duplicate"
        if not pair.quote or normalise(pair.quote) not in normalise(chunk.text):
            pair = replace(pair, quote=best_sentence(pair.answer, chunk.text))
        return pair, None

    def filter_chunk(self, chunk: Chunk, pairs: list[QAPair]) -> list[QAPair]:
        """The kept pairs of one chunk, at most `max_pairs_per_chunk`."""
        kept: list[QAPair] = []
        for pair in pairs:
            if len(kept) >= self.cfg.max_pairs_per_chunk:
                self.rejected["per_chunk_cap"] += 1
                continue
            good, reason = self.check(pair, chunk)
            if good is None:
                self.rejected[reason or "unknown"] += 1
                log.debug("rejected (%s): %s", reason, pair.question)
                continue
            self._seen.add(good.question)
            kept.append(good)
        return kept
