"""The decode-time repetition ban: a row may not write one copy too many of what it has just
repeated.

A small model that loses its way loops: `1. 1.1.1.1 ⏎ 2. 2.1.1.1 ⏎ …` in Chinese, `[4] [4]
[4] …`, the same sentence again. The stop guard (`batching.is_looping`) ends such a row after
32 tokens of loop, but the text is then a loop, and all the grounding check can do is quote
over it. This ban acts one token earlier: when the chosen token would complete one copy too
many, that token is excluded and the next best is taken (the same logits, greedy or sampled),
so the model has to write something else. Two rules:

- back to back: a single token may repeat up to `SINGLE_COPIES` times (`1000000`, `哈哈哈`), a
  unit of 2-7 tokens `SHORT_COPIES` times, a unit of 8 or more (a phrase or sentence) once;
- near loops: the same `NGRAM` tokens may come a third time only when the first two copies
  are more than `WINDOW` tokens back (lists whose counter changes, lines that come back with a
  word changed: what SmolLM2's Chinese loops are; measured in the README's outside-corpora
  table, 10 of 35 own texts looping before this rule, 2 after, the answers users got the same).

Why not transformers' `no_repeat_ngram_size`: it bans the *second* copy of any earlier n-gram,
and a RAFT answer says its value twice on purpose (`27 days [1]` then `[1]: "… receive 27 days
of annual leave …"`), so it would break the quote the grounding check reads. A unit or n-gram
of punctuation and spaces only (`...`, `|---|---|`) is never banned.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

SINGLE_COPIES = 8  # a one-token unit: digits of a large number, laughter, a row of ideographs
SHORT_COPIES = 3  # 2-7 tokens: "1.1.1." is allowed, the fourth "1." is not
LONG_UNIT = 8  # units this long or longer (phrases, sentences) may not repeat at all
MAX_UNIT = 32
NGRAM, NGRAM_COPIES, WINDOW = 4, 2, 64  # near loops: a 4-gram a third time in 64 tokens
_WORD = re.compile(r"\w")


def allowed_copies(unit: int) -> int:
    """How many back-to-back copies of a unit of `unit` tokens a row may write."""
    if unit == 1:
        return SINGLE_COPIES
    return SHORT_COPIES if unit < LONG_UNIT else 1


@dataclass(frozen=True)
class RepeatBan:
    """Decides whether a token would extend a repeat too far.

    Two rules: back-to-back copies of a unit (`allowed_copies`), and a near loop, the same
    `ngram` tokens a `ngram_copies + 1`-th time within the row's last `window` tokens (a list
    whose counter changes, `1. 1.1.1.1 ⏎ 2. 2.1.1.1 ⏎ …`, or a line that comes back with one
    word changed: never back to back, yet a loop). A RAFT answer says its value twice (answer,
    then quote), so two copies are allowed; 0 turns the second rule off.

    `decode` turns token ids into text, to tell a unit holding a word from punctuation; it is
    called only for a tail that does repeat (a byte-level tokenizer's single token may be half
    a character, so the unit is decoded whole)."""

    decode: Callable[[list[int]], str]
    max_unit: int = MAX_UNIT
    ngram: int = NGRAM
    ngram_copies: int = NGRAM_COPIES
    window: int = WINDOW

    def bans(self, tokens: list[int], token: int) -> bool:
        """True when `tokens + [token]` breaks either rule."""
        return self._back_to_back(tokens, token) or self._near_loop(tokens, token)

    def _back_to_back(self, tokens: list[int], token: int) -> bool:
        """More back-to-back copies of one unit of 1..max_unit tokens than `allowed_copies`
        permits, the unit holding a word."""
        n = len(tokens)
        for unit in range(1, min(self.max_unit, n) + 1):
            if tokens[-unit] != token:  # the unit's next copy would start over with `token`
                continue
            span = unit * (allowed_copies(unit) + 1)
            if span > n + 1:
                continue
            tail = tokens[n + 1 - span:] + [token]
            copy = tail[-unit:]
            if tail[:-unit] == tail[unit:] and not _is_repeat(copy) \
                    and _WORD.search(self.decode(copy)):
                return True
        return False

    def _near_loop(self, tokens: list[int], token: int) -> bool:
        """The n-gram `tokens[-ngram+1:] + [token]` already `ngram_copies` times (without
        overlap) in the last `window` tokens, holding a word."""
        k = self.ngram - 1
        if self.ngram_copies <= 0 or len(tokens) < self.ngram_copies * self.ngram:
            return False
        gram = [*tokens[len(tokens) - k:], token]
        recent = tokens[-self.window:]
        seen, i, end = 0, 0, len(recent) - k
        while i < end:  # copies that do not overlap (`0000000` holds one `0000` and a half)
            try:
                i = recent.index(gram[0], i, end)  # the next candidate start, at C speed
            except ValueError:
                break
            if recent[i:i + self.ngram] == gram:
                seen += 1
                i += self.ngram
            else:
                i += 1
        return seen >= self.ngram_copies and bool(_WORD.search(self.decode(gram)))


def _is_repeat(unit: list[int]) -> bool:
    """True when `unit` is itself copies of a shorter unit (`XX` is `X` twice): such a run is
    judged by the shorter unit's allowance."""
    n = len(unit)
    return any(n % d == 0 and unit == unit[d:] + unit[:d] for d in range(1, n // 2 + 1))
