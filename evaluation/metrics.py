"""Answer and retrieval metrics for `ragtune eval`, for English and Chinese alike.

Answers: exact match, token F1 and ROUGE-L compare the final answer (the text after
"Answer:" if any, without the `[n]: "quote"` evidence lines of the cited layout and without
citation markers) with the
reference; containment asks whether the normalised reference appears anywhere in the reply.
Chinese is compared character by character (each CJK ideograph is a token, Latin words and
numbers stay whole), English word by word (SQuAD normalisation: lower case, no punctuation,
no articles). An unanswerable question (reference `None`) scores 1 on every answer metric
when the model refuses and 0 otherwise.

Retrieval: hit@k, recall@k and reciprocal rank of the expected source(s) among the ranked
sources of the retrieved chunks.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ragtune.prompts import is_chinese
from ragtune.prompts import is_refusal as says_it_does_not_know

_CJK = "\u4e00-\u9fff\u3400-\u4dbf"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_ARTICLES = {"a", "an", "the"}
_CITATION = re.compile(r"\[(\d{1,3})\]")
_EVIDENCE = re.compile(r'^\s*\[\d{1,3}\]\s*[:：]\s*["“「].*$', re.MULTILINE)
_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)
_ANSWER_PREFIX = re.compile(r"(?:^|\n|\s)(?:answer|final answer|答案|回答)\s*[:：]\s*", re.IGNORECASE)



def strip_reasoning(text: str) -> str:
    """Drop a DeepSeek-R1 `<think>…</think>` block (closed or cut off) from a reply."""
    return _THINK.sub("", text).strip()


def extract_answer(text: str) -> str:
    """The final answer of a reply: after the last "Answer:" if any, without the evidence
    lines (`[n]: "quote"`) and [n] markers."""
    text = _EVIDENCE.sub("", strip_reasoning(text)).strip()
    parts = _ANSWER_PREFIX.split(text)
    answer = parts[-1] if len(parts) > 1 else text
    answer = _CITATION.sub("", answer)
    return answer.strip().strip("\"'“”「」").strip()


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith(("P", "S"))


def normalize(text: str) -> str:
    """SQuAD-style normalisation, Chinese-aware: lower case, no punctuation or articles."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if _is_punct(ch) else ch for ch in text)
    words = text.split()
    if not is_chinese(text):
        words = [w for w in words if w not in _ARTICLES]
    return " ".join(words)


def tokens(text: str) -> list[str]:
    """Normalised tokens: one per CJK character, one per Latin word or number."""
    return _TOKEN.findall(normalize(text))


def is_refusal(text: str) -> bool:
    """True when a reply says it does not know (English or Chinese phrasings, NO_ANSWER)."""
    return says_it_does_not_know(strip_reasoning(text))


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised final answer equals the normalised reference."""
    return float(tokens(extract_answer(prediction)) == tokens(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall (bag of tokens, as in SQuAD)."""
    pred, ref = tokens(extract_answer(prediction)), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains(prediction: str, reference: str) -> float:
    """1.0 when the normalised reference appears in the normalised reply."""
    ref, reply = tokens(reference), tokens(strip_reasoning(prediction))
    if not ref:
        return 0.0
    if is_chinese(reference):
        return float("".join(ref) in "".join(reply))
    return float(f" {' '.join(ref)} " in f" {' '.join(reply)} ")


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a)·len(b)))."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: LCS-based precision/recall over words (characters for Chinese)."""
    pred, ref = tokens(extract_answer(prediction)), tokens(reference)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return float(not pred and not ref)
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def citations(text: str) -> list[int]:
    """The [n] markers a reply cites, in order of first appearance."""
    seen: list[int] = []
    for match in _CITATION.finditer(strip_reasoning(text)):
        n = int(match.group(1))
        if n not in seen:
            seen.append(n)
    return seen


def source_matches(source: str, expected: str) -> bool:
    """True when a chunk's source path is the expected file (relative to the docs folder)."""
    def clean(path: str) -> str:
        path = path.replace("\\", "/").strip()
        return path[2:] if path.startswith("./") else path

    src, exp = clean(source), clean(expected)
    return bool(exp) and (src == exp or src.endswith("/" + exp))


def _as_list(expected: str | Sequence[str] | None) -> list[str]:
    if expected is None:
        return []
    return [expected] if isinstance(expected, str) else [e for e in expected if e]


def citation_correct(prediction: str, sources: Sequence[str],
                     expected: str | Sequence[str] | None) -> float | None:
    """1.0 when some cited [n] points at a passage from an expected source; None if n/a."""
    wanted = _as_list(expected)
    if not wanted or not sources:
        return None
    for n in citations(prediction):
        if 1 <= n <= len(sources) and any(source_matches(sources[n - 1], e) for e in wanted):
            return 1.0
    return 0.0


def _first_rank(ranked: Sequence[str], expected: str, k: int) -> int | None:
    for rank, source in enumerate(ranked[:k], start=1):
        if source_matches(source, expected):
            return rank
    return None


def hit_at_k(ranked: Sequence[str], expected: str | Sequence[str], k: int) -> float:
    """1.0 when any expected source is among the first k retrieved sources."""
    return float(any(_first_rank(ranked, e, k) for e in _as_list(expected)))


def recall_at_k(ranked: Sequence[str], expected: str | Sequence[str], k: int) -> float:
    """Share of the expected sources found among the first k (= hit@k for one source)."""
    wanted = _as_list(expected)
    if not wanted:
        return 0.0
    return sum(1 for e in wanted if _first_rank(ranked, e, k)) / len(wanted)


def reciprocal_rank(ranked: Sequence[str], expected: str | Sequence[str], k: int) -> float:
    """1/rank of the first retrieved chunk from an expected source (0 beyond k)."""
    ranks = [r for e in _as_list(expected) if (r := _first_rank(ranked, e, k))]
    return 1.0 / min(ranks) if ranks else 0.0


@dataclass(frozen=True)
class AnswerScores:
    """The answer metrics of one reply to one question."""

    exact_match: float
    f1: float
    contains: float
    rouge_l: float
    refused: bool
    citation: float | None


def score_answer(prediction: str, reference: str | None, sources: Sequence[str] = (),
                 expected_source: str | Sequence[str] | None = None) -> AnswerScores:
    """All answer metrics; for an unanswerable question a refusal is the correct answer."""
    refused = is_refusal(prediction)
    if reference is None:
        ok = float(refused)
        return AnswerScores(ok, ok, ok, ok, refused, None)
    cite = citation_correct(prediction, sources, expected_source)
    return AnswerScores(exact_match(prediction, reference), token_f1(prediction, reference),
                        contains(prediction, reference), rouge_l(prediction, reference),
                        refused, cite)


@dataclass(frozen=True)
class RetrievalScores:
    """Retrieval metrics of one query against its expected source(s)."""

    hit: float
    recall: float
    mrr: float


def score_retrieval(ranked: Sequence[str], expected: str | Sequence[str],
                    k: int) -> RetrievalScores:
    """hit@k, recall@k and reciprocal rank for one ranked list of sources."""
    return RetrievalScores(hit_at_k(ranked, expected, k), recall_at_k(ranked, expected, k),
                           reciprocal_rank(ranked, expected, k))


def mean(values: Sequence[float | None]) -> float | None:
    """Average of the values that apply (None entries are skipped); None when none apply."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None
