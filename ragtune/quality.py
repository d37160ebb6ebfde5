"""Is a generated answer degenerate? One detector for training, serving and eval alike.

A fine-tune that breaks a small model shows first as answers that loop (`[4] [4] [4] …`, the
same phrase again and again), carry citation markers and nothing else, or are empty, long
before the validation loss says anything. `degeneracy` names which of these an answer is.
"""

from __future__ import annotations

import re
from collections import Counter

THINK_CLOSE = "</think>"
_MARKER = re.compile(r"\[\d+\]")
# Citation markers, single CJK ideographs, words, single punctuation marks.
_TOKEN = re.compile(r"\[\d+\]|[\u3400-\u9fff\uf900-\ufaff]|\w+|[^\w\s]")
MIN_TOKENS = 8  # shorter answers are never called loops ("27 days. [3]" is fine)
MAX_NGRAM = 8
LOOP_SHARE = 0.5  # a repeated n-gram covering at least this share of the answer is a loop
MIN_REPEATS = 3
# A short unit repeated back to back ("TheTheThe", "2222", "年假年假"): loops inside one word.
_STUTTER = re.compile(r"(\S{1,8}?)\1{3,}")


def answer_part(text: str) -> str:
    """The answer without a reasoning block (`…</think>` kept out)."""
    return text.rsplit(THINK_CLOSE, 1)[1] if THINK_CLOSE in text else text


def degeneracy(text: str) -> str | None:
    """"empty" (no letter or digit at all: "", "....."), "citations-only" ("[4] [4]"), "loop",
    or None for an answer that is none of these."""
    answer = answer_part(text).strip()
    if not re.sub(r"[\W_]", "", _MARKER.sub("", answer)):
        return "citations-only" if _MARKER.search(answer) else "empty"
    tokens = _TOKEN.findall(answer)
    if loop_share(tokens) >= LOOP_SHARE or stutter_share(answer) >= LOOP_SHARE:
        return "loop"
    return None


def stutter_share(answer: str) -> float:
    """Share of the non-space characters in back-to-back repeats of a unit of 1-8 characters
    that holds a letter or digit (so "......" or "----" are not counted)."""
    text = re.sub(r"\s+", "", answer)
    if len(text) < 2 * MIN_TOKENS:
        return 0.0
    runs = [m.group(0) for m in _STUTTER.finditer(text) if re.search(r"\w", m.group(1))]
    return sum(len(r) for r in runs) / len(text)


def loop_share(tokens: list[str]) -> float:
    """Largest share of `tokens` covered by the repeats of one n-gram (n <= 8, >= 3 repeats),
    ignoring n-grams of punctuation only."""
    if len(tokens) < MIN_TOKENS:
        return 0.0
    best = 0.0
    for n in range(1, min(MAX_NGRAM, len(tokens) // MIN_REPEATS) + 1):
        grams = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        for gram, count in grams.most_common(3):
            if count < MIN_REPEATS or not any(re.search(r"\w", t) for t in gram):
                continue
            covered = [False] * len(tokens)
            for i in range(len(tokens) - n + 1):
                if tuple(tokens[i:i + n]) == gram:
                    covered[i:i + n] = [True] * n
            best = max(best, sum(covered) / len(tokens))
    return best
