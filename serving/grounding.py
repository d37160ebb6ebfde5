"""The grounding check: is a retrieval answer supported by a passage it cites?

Mechanism (lexical, deterministic, no model; about a millisecond per answer, see
`bench/bench_grounding.py`). A small NLI or extractive model would be better, but none ships
offline, and a check that runs on every answer must cost ≪ the generation:

1. The answer is split into its claim (the text without `[n]` markers and without the RAFT
   evidence lines `[n]: "quote"`) and its quotes. Reasoning (`<think>`) never reaches here.
2. The claim's *facts* (numbers, dates, codes such as TW-40, capitalised names) must all occur
   in the cited passage, and its *content terms* that the question does not already hold
   (English: Snowball-stemmed words without stop words; Chinese: jieba words, also matched
   as substrings of the passage) must be covered
   there to `min_coverage`. A quote must be a near-verbatim span of its passage.
3. The supporting sentence (with its neighbours) must be about the question: its weighted
   coverage of the question's terms must reach `relevance_margin` × that of the best sentence
   among all retrieved passages. This catches the worst case, a confident citation of a real
   but off-topic sentence ("3 days [3]" from a carry-over rule, asked about annual leave).
   Section headings are left out of this comparison (they count for the gate and the quotes):
   a heading's terms hold for every sentence under it, so they cannot tell two of them apart.
   A claim that names nothing the question is about, only a value ("The answer is: 2 working
   days."), must come from a sentence within `bare_value_margin` of the best: with no words
   of its own to say which sentence it read, a near miss passed the 0.7 margin. A claim that
   copies a passage sentence word for word is held to that sentence's own words as well: a
   copy is supported by construction, and its neighbours made the sentence beside the answer
   look relevant.

4. The question's expected answer type (`answer_types`: a weight, an amount of money, a number
   or date, a time of day, a code, a person) must be met: an answer to "How much does the TW-40
   weigh?" that gives no weight is not supported, and only sentences holding such a value (and,
   when the question names a year or a release number, in a passage that holds it) can be
   extracted or make the question answerable. This is what tells a near miss from an answer.

A passage's section heading path, shown to the model on its first line, is part of it.
`extract()` picks the sentence (or table row, with its header) of the retrieved passages that
best answers the question; `answerability()` is that sentence's weighted coverage of the
question (0 when no sentence holds the asked kind of value), the score that the calibrated
"nothing relevant was found" gate compares.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from ragtune.quality import degeneracy
from serving import answer_types
from serving.textunits import (ASKED_NUMBER, CJK_RUN, entities, facts, fold, has_fact,
                               question_terms, sentences, split_answer, terms)

__all__ = ["CheckerConfig", "Grounding", "answerability", "check", "extract", "question_terms",
           "sentences", "split_answer", "terms"]


@dataclass
class Grounding:
    """The verdict on one answer, as `/ask` and the `/v1` `ragtune` field return it."""

    supported: bool
    checked: bool = True  # False when there was nothing to check against (no retrieval)
    passage: int | None = None  # the supporting passage n
    sentence: str | None = None  # the supporting sentence of that passage
    score: float = 0.0  # coverage of the claim's content by the passage (0..1)
    relevance: float = 0.0  # the supporting sentence's question coverage vs the best one
    reason: str | None = None  # why it is not supported
    cited: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckerConfig:
    """Thresholds of the lexical check (see the module docstring)."""

    min_coverage: float = 0.6
    quote_coverage: float = 0.8
    relevance_margin: float = 0.7
    bare_value_margin: float = 0.8  # for a claim that names nothing the question is about


# What a sentence's holding the answer in the asked form (answer_types.answer_form) adds to its
# rank among the sentences to quote: enough to pass a neighbour that only restates the question.
FORM_BONUS = 0.3
OWN_WEIGHT = 1.0
# A lead-in that stops without punctuation, and the command line it introduces.
_OPEN_END = re.compile(r"[A-Za-z0-9\u4e00-\u9fff]$")
_CODE_LINE = re.compile(r"^\$\s|^#\s|(?<!\w)--?[A-Za-z][\w-]*|\w[-_.]\w|/\w")

Passages = Sequence[tuple[int, str] | tuple[int, str, str]]  # (n, text[, section heading path])


class _Scorer:
    """Question-term weights (IDF over the retrieved passages' sentences) and sentence scores.

    A passage's section heading path (what the model sees on the passage's first line) is a
    unit of its own, and its terms count for every sentence of the passage: "released 17
    September 2024" answers "When was 4.3.1 released?" under the heading "4.3.1 …".
    """

    def __init__(self, question: str, passages: Passages) -> None:
        self.units: list[tuple[int, int, str]] = []
        self.heading: dict[int, set[str]] = {}
        self.section: dict[int, str] = {}  # the heading path itself
        self.passage_text: dict[int, str] = {}  # heading path and text, as the model sees them
        self.holds_asked: dict[int, bool] = {}  # the passage holds the years/releases asked
        self.is_heading: list[bool] = []  # per unit: the passage's heading line
        asked = {m.replace(",", "") for m in ASKED_NUMBER.findall(question)}
        for n, text, *rest in passages:
            section = rest[0].strip() if rest and rest[0] else ""
            self.heading[n], self.section[n] = terms(section), section
            self.passage_text[n] = f"{section}\n{text}" if section else text
            lower = self.passage_text[n].lower()
            self.holds_asked[n] = all(has_fact(x, lower) for x in asked)
            lines = ([section] if section else []) + sentences(text)
            self.is_heading.extend([bool(section)] + [False] * (len(lines) - 1))
            self.units.extend((n, i, u) for i, u in enumerate(lines))
        self.unit_terms = [terms(u) for _, _, u in self.units]
        every = "\n".join(self.passage_text.values()).lower()
        self.missing = sorted(e for e in entities(question) if not has_fact(e, every))
        thing = answer_types.asked_thing(question)
        thing_terms = terms(thing) if thing else set()
        if len(thing_terms) > 1 and not any(thing_terms & ts for ts in self.unit_terms):
            self.missing.append(thing)  # no passage mentions any deadweight tester
        self.question_terms = question_terms(question)
        self.kind = answer_types.expected(question)
        self.question = question
        df = Counter(t for ts in self.unit_terms for t in ts & self.question_terms)
        total = max(len(self.units), 1)
        self.weight = {t: math.log(1 + (total + 1) / (df.get(t, 0) + 0.5))
                       for t in sorted(self.question_terms)}  # sorted: float sums (and so
        # ties between sentences) must not depend on the interpreter's string-hash seed
        self.norm = sum(self.weight.values()) or 1.0

    def relevance(self, unit_terms: set[str], text: str = "", folded: bool = False) -> float:
        """IDF-weighted share of the question's terms among `unit_terms` (a Chinese term also
        counts when it is a substring of `text`: jieba cuts 新员工 and 员工 differently).
        `folded` matches word families (`textunits.fold`: decided ~ decision); quotes only."""
        if folded:
            unit_terms = {fold(t) for t in unit_terms}
        return sum(w for t, w in self.weight.items()
                   if (fold(t) if folded else t) in unit_terms
                   or (text and CJK_RUN.fullmatch(t) and t in text)) / self.norm

    def window(self, k: int, heading: bool = True) -> tuple[set[str], str]:
        """Terms and text of unit k with its neighbours in the same passage and (unless
        `heading` is False) its heading."""
        n, _, _ = self.units[k]
        out, text = set(self.unit_terms[k]), [self.units[k][2]]
        if heading:
            out |= self.heading.get(n, set())
        for j in (k - 1, k + 1):
            if 0 <= j < len(self.units) and self.units[j][0] == n \
                    and (heading or not self.is_heading[j]):
                out |= self.unit_terms[j]
                text.append(self.units[j][2])
        return out, "\n".join(text)

    def window_terms(self, k: int) -> set[str]:
        return self.window(k)[0]

    def window_relevance(self, k: int, heading: bool = True, folded: bool = False) -> float:
        return self.relevance(*self.window(k, heading), folded=folded)

    def best_body(self) -> float:
        """The best heading-free window relevance among the units that hold the asked kind:
        what the relevance rule of the check compares a claim's sentence with. A heading's
        terms count for every sentence under it, so with them any sentence of the right
        section looked as relevant as the one that answers ("shipped within 2 working days"
        under "Dead on arrival" for "how many days must the faulty unit arrive")."""
        return max((self.window_relevance(k, heading=False) for k in self._answering_body),
                   default=0.0)

    @cached_property
    def _answering_body(self) -> list[int]:
        """The body units (not headings) that hold a value of the asked kind."""
        return [k for k in range(len(self.units)) if self.answers(k) and not self.is_heading[k]]

    @cached_property
    def _best_own(self) -> float:
        return max((self.relevance(self.unit_terms[j], self.units[j][2])
                    for j in self._answering_body), default=0.0)

    def own_ratio(self, k: int) -> float:
        """Unit k's own relevance (its words, no neighbours, no heading) against the best own
        relevance of a body unit that holds the asked kind. A bare value is judged by it too:
        with its neighbours' words, the "Standard calibration … £185" row of a price table was
        as relevant as the "Express calibration … £295" row under it, and "A: £185." passed
        for the express price."""
        own = self.relevance(self.unit_terms[k], self.units[k][2])
        return own / self._best_own if self._best_own > 0 else 1.0

    def in_form(self, k: int) -> bool:
        """Whether unit k (with the unit it introduces) gives the answer in the asked form."""
        return answer_types.answer_form(self.question, self.with_continuation(k))

    def with_continuation(self, k: int) -> str:
        """Unit k, and the unit after it when k only introduces it: "To list all packages for
        which newer versions are available, run:" is followed by the command it announces, and
        so is a lead-in that ends in no punctuation at all ("To list all the files provided by
        the installed package foo execute the command" above `dpkg --listfiles foo`)."""
        n, _, sentence = self.units[k]
        following = k + 1
        if following >= len(self.units) or self.units[following][0] != n:
            return sentence
        after = self.units[following][2]
        end = sentence.rstrip()
        if end.endswith((":", "：")) or (
                _OPEN_END.search(end) and not self.is_heading[k] and _CODE_LINE.search(after)):
            return f"{sentence} {after}"
        return sentence

    def answers(self, k: int) -> bool:
        """Whether unit k holds a value of the kind the question asks for (see answer_types),
        in a passage that holds the numbers the question names ("… in the third quarter of
        2024" is not answered by a passage that never mentions 2024)."""
        text = self.units[k][2]
        if self.is_heading[k]:
            text = answer_types.heading_without_numbering(text)
        return (not self.missing and self.holds_asked[self.units[k][0]]
                and answer_types.has_value(self.kind, text, self.question))

    def best(self, quotable: bool = False) -> tuple[int, float]:
        """Index of the most relevant unit that holds a value of the asked kind (ties: earlier
        passage) and its relevance; (-1, 0.0) when no unit does. `quotable` ranks the units
        as quotes: heading lines only when no sentence holds the asked value (a heading
        restates the question, "6.2.2. Where do these codenames come from?", unless it holds
        the answer, "4.3.1, released 17 September 2024"), with more weight on the unit's own
        words and a bonus for the answer's form (`answer_types.answer_form`)."""
        own, bonus = (OWN_WEIGHT, FORM_BONUS) if quotable else (0.5, 0.0)
        candidates = [k for k in range(len(self.units)) if self.answers(k)]
        if quotable and any(not self.is_heading[k] for k in candidates):
            candidates = [k for k in candidates if not self.is_heading[k]]
        scored = [(self.window_relevance(k, folded=quotable)
                   + own * self.relevance(self.unit_terms[k], self.units[k][2], quotable)
                   + (bonus * self.in_form(k) if bonus else 0.0), -k) for k in candidates]
        if not scored:
            return -1, 0.0
        _, neg_k = max(scored)
        return -neg_k, self.window_relevance(-neg_k)


@lru_cache(maxsize=64)
def _scorer(question: str, passages: tuple[tuple[str | int, ...], ...]) -> _Scorer:
    """One scorer per (question, passages): the gate, the check and the extraction of one
    answer all score the same sentences, so they are split and tokenised once."""
    return _Scorer(question, passages)


def answerability(question: str, passages: Passages) -> float:
    """How well the best retrieved sentence covers the question's terms (0..1, IDF-weighted)."""
    return _scorer(question, tuple(passages)).best()[1]


def extract(question: str, passages: Passages) -> tuple[int, str, float] | None:
    """The (passage n, sentence, relevance) that best answers the question, or None."""
    scorer = _scorer(question, tuple(passages))
    k, rel = scorer.best(quotable=True)
    if k < 0:
        return None
    n, _, sentence = scorer.units[k]
    return n, scorer.with_continuation(k), rel


def check(question: str, answer: str, passages: Passages,
          config: CheckerConfig | None = None) -> Grounding:
    """Check an answer against the passages it cites (all passages when it cites none)."""
    cfg = config or CheckerConfig()
    if not passages:
        return Grounding(False, checked=False, reason="no passages were retrieved")
    claim, quotes, cited = split_answer(answer)
    scorer = _scorer(question, tuple(passages))
    by_n = scorer.passage_text
    bad = [n for n in cited if n not in by_n]
    if bad:
        return Grounding(False, reason=f"cites [{bad[0]}], which is not a retrieved passage",
                         cited=cited)
    # a bare list marker ("1." once a copied passage header is cut off) says nothing either
    bare = not answer_types.without_numbering(claim).strip(" .。、")
    kind = degeneracy(answer) or ("empty" if bare else None)
    if kind:
        return Grounding(False, reason=f"the answer is degenerate ({kind})", cited=cited)
    for n, quote in quotes:
        if _coverage(quote, by_n[n]) < cfg.quote_coverage:
            return Grounding(False, reason=f"the quote is not in passage [{n}]", cited=cited)
    best_rel = scorer.best_body()
    verdicts = [_against(claim, question, n, scorer, best_rel, cfg)
                for n in (cited or [p[0] for p in passages])]
    good = [v for v in verdicts if v.supported]
    pick = max(good or verdicts, key=lambda v: (v.score, v.relevance))
    pick.cited = cited
    if not good and not cited:
        pick.reason = f"{pick.reason} (the answer cites no passage)"
    return pick


def _covered(want: set[str], have: set[str], text: str) -> float:
    """Share of `want` found in `have`; a CJK term also counts when it is a substring of the
    text (a claim's bigram may straddle the passage's own bigram boundaries)."""
    if not want:
        return 1.0
    hits = sum(1 for t in want if t in have or (CJK_RUN.fullmatch(t) and t in text))
    return hits / len(want)


def _coverage(text: str, passage: str) -> float:
    missing = [f for f in facts(text) if not has_fact(f, passage.lower())]
    if missing:
        return 0.0
    return _covered(terms(text), terms(passage), passage)


def _against(claim: str, question: str, n: int, scorer: _Scorer, best_rel: float,
             cfg: CheckerConfig) -> Grounding:
    """The verdict of the claim against passage n."""
    units = [k for k, (m, _, _) in enumerate(scorer.units) if m == n]
    text = " ".join(scorer.units[k][2] for k in units)
    lower = answer_types.without_numbering("\n".join(scorer.units[k][2] for k in units)).lower()
    question_lower = question.lower()
    missing = sorted(f for f in facts(claim)
                     if not has_fact(f, lower) and not has_fact(f, question_lower))
    claim_terms = terms(claim, split_hyphens=True)
    new_terms = claim_terms - scorer.question_terms
    new_facts = [f for f in facts(claim) if not has_fact(f, question_lower)]
    if not new_terms and not new_facts:  # "The release name of X is X.", or the question itself
        reason = ("the answer only restates the question" if claim_terms else
                  "the answer states nothing that can be checked")
        return Grounding(False, passage=n, reason=reason)
    if not units:
        return Grounding(False, passage=n, reason=f"passage [{n}] is empty")
    # What the answer adds must be in the passage's sentences: a claim made of its heading's
    # words ("… is the Calibration Procedure for Pressure Water Level Loggers") says nothing,
    # unless it takes a value from there ("released 17 September 2024" in a release heading).
    from_heading = any(any(c.isdigit() for c in f) for f in new_facts)
    body = units if from_heading else [k for k in units if not scorer.is_heading[k]] or units
    have = set().union(*(scorer.window(k, heading=from_heading)[0] for k in body))
    coverage = _covered(new_terms, have, " ".join(scorer.units[k][2] for k in body))
    anchor = new_terms or claim_terms  # the sentence that holds what the answer adds
    k = max(units, key=lambda k: (not scorer.is_heading[k], len(anchor & scorer.window_terms(k)),
                                  len(anchor & scorer.unit_terms[k]), -k))
    rel = scorer.window_relevance(k, heading=False)
    ratio = rel / best_rel if best_rel > 0 else 1.0
    common = dict(passage=n, sentence=scorer.units[k][2], score=round(coverage, 3),
                  relevance=round(min(ratio, 1.0), 3))
    if missing:
        return Grounding(False, reason=f"{', '.join(missing[:3])} not in passage [{n}]", **common)
    apart = _apart(claim, question_lower, scorer, k)
    if apart:
        return Grounding(False, reason=f"the sentence of passage [{n}] that says this does not "
                         f"name {apart}", **common)
    if not answer_types.has_value(scorer.kind, claim, question):
        return Grounding(False, reason=f"the question asks for a {scorer.kind}; the answer "
                         "gives none", **common)
    misses = answer_types.claim_misses(question, claim)
    if misses:
        return Grounding(False, reason=misses, **common)
    if coverage < cfg.min_coverage:
        return Grounding(False, reason=f"passage [{n}] covers {coverage:.0%} of the answer's "
                         "content", **common)
    # A bare value ("The answer is: 2 working days.") names nothing the question is about, so
    # the sentence it comes from must be (nearly) the best one, not merely a relevant one.
    topical = (claim_terms & scorer.question_terms).difference(
        *(terms(w) for w in answer_types.counted_nouns(question)))
    margin = cfg.relevance_margin if topical else cfg.bare_value_margin
    off = _off_topic_copy(claim, units, scorer, cfg.relevance_margin)
    if off is not None:
        return Grounding(False, reason=f"the answer copies a sentence of passage [{n}] that is "
                         "not the one about the question", **{**common, "sentence": off})
    if ratio < margin or (not topical and scorer.own_ratio(k) < margin):
        return Grounding(False, reason=f"the sentence of passage [{n}] is not the one about the "
                         "question", **common)
    return Grounding(True, **common)


_FOLD = re.compile(r"[\W_]+")
COPY_WORDS = 6  # a claim sentence this long found word for word in a passage is a copy of it


def _off_topic_copy(claim: str, units: list[int], scorer: _Scorer, margin: float) -> str | None:
    """The sentence of `units` (one passage) that the claim's first sentence copies word for
    word (at least COPY_WORDS words) when that sentence's own words fall below `margin` of the
    best (`own_ratio`), else None. A copy is supported by construction, so the window rule,
    which lets a sentence's neighbours count, would pass a copy of the sentence *beside* the
    answer; a copy is judged by its own words, as a bare value is."""
    first = next((x for x in sentences(claim) if x.strip()), "")
    words = _FOLD.sub(" ", first.lower()).split()
    if len(words) < COPY_WORDS:
        return None
    needle = " ".join(words)
    for k in units:
        if needle in " ".join(_FOLD.sub(" ", scorer.units[k][2].lower()).split()):
            return scorer.units[k][2] if scorer.own_ratio(k) < margin else None
    return None


def _apart(claim: str, question_lower: str, scorer: _Scorer, k: int) -> str | None:
    """A fact (number, code, name) the claim repeats from the question that its sentence (unit
    k, or the passage's heading) does not hold, or None. "The codename sid was given to Debian
    13" pairs sid with 13, but the passage's sid sentence is the one after "trixie (Debian 13)
    …"; "The prefix for Halyard parts is TW-" pairs Halyard with the line "- TW- Tidewell
    parts": near each other, yet no sentence says what the claim says."""
    shared = sorted(f for f in facts(claim) if has_fact(f, question_lower))
    if not shared:
        return None
    n = scorer.units[k][0]
    here = f"{scorer.section.get(n, '')}\n{scorer.units[k][2]}".lower()
    return next((f for f in shared if not has_fact(f, here)), None)
