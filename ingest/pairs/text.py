"""Text helpers for pair generation: sentences, normalisation, near-duplicates, support checks.

English is compared by words, Chinese by characters and character bigrams, so that one
support check and one near-duplicate test serve both languages.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePath

from ragtune.prompts import is_chinese

_MARKUP = re.compile(r"[*_`#>|]+")
_BULLET = re.compile(r"^\s*(?:[-*+•](?=\s)|\d{1,2}[.)](?=\s)"
                     r"|\d{1,2}(?:\.\d{1,2})+(?=\s+[A-Z\u4e00-\u9fff])"
                     r"|[（(]?[一二三四五六七八九十]+[、.)）]|第[一二三四五六七八九十百零\d]+条)\s*")
_TERMINAL = ".!?:;。！？；：)）\"”"
_SENT_EN = re.compile(r"(?<=[.!?])[\"'”’)]?\s+(?=[\"'“‘(]?[A-Z0-9])")
_SENT_ZH = re.compile(r"(?<=[。！？；])")
_WORD = re.compile(r"[a-z0-9]+(?:[.'’-][a-z0-9]+)*")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
SECTION_SEP = re.compile(r"\s+[>›»]\s+")
STOPWORDS = frozenset(
    "a an the of to in on at for by and or is are was were be been it its this that these those "
    "with as from your you our we they their his her he she which who what when where how do does "
    "did can may must will would should shall not no any all each per than then there".split())
ZH_STOP = frozenset("的了是在和与及或为对于由把被有也就都而且并等中上下其这那之")


def clean(text: str) -> str:
    """Strip Markdown markup and list bullets, collapse whitespace."""
    text = _BULLET.sub("", text)
    text = _MARKUP.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def normalise(text: str) -> str:
    """Lower-case, NFKC, punctuation removed: the key for exact-duplicate tests."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch if ch.isalnum() or ch.isspace() else " " for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def _joined_lines(text: str) -> list[str]:
    """Lines, with hard-wrapped ones (PDF text) joined: a line that does not end a sentence is
    continued by a next line that starts in lower case."""
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if out and line and out[-1] and out[-1][-1] not in _TERMINAL and line[0].islower():
            out[-1] = f"{out[-1]} {line}"
        else:
            out.append(line)
    return out


def sentences(text: str) -> list[str]:
    """Split a chunk into cleaned sentences (lines first, then sentence punctuation)."""
    out: list[str] = []
    for line in _joined_lines(text):
        if not line or set(line) <= set("|-: "):
            continue
        parts = _SENT_ZH.split(line) if is_chinese(line) else _SENT_EN.split(line)
        out.extend(s for s in (clean(p) for p in parts) if s)
    return out


def tokens(text: str) -> list[str]:
    """Content tokens: English words (minus stop words), CJK characters and CJK bigrams."""
    norm = unicodedata.normalize("NFKC", text).lower()
    words = [w for w in _WORD.findall(norm) if w not in STOPWORDS]
    cjk = [c for c in _CJK.findall(norm)]
    bigrams = ["".join(cjk[i:i + 2]) for i in range(len(cjk) - 1)]
    return words + [c for c in cjk if c not in ZH_STOP] + bigrams


def shingles(text: str, n: int | None = None) -> set[str]:
    """Character n-grams of the normalised text (spaces removed), for near-duplicate tests:
    trigrams, or bigrams for Chinese (one CJK character carries about a word)."""
    n = n or (2 if is_chinese(text) else 3)
    norm = normalise(text).replace(" ", "")
    if len(norm) <= n:
        return {norm} if norm else set()
    return {norm[i:i + n] for i in range(len(norm) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def numbers(text: str) -> set[str]:
    """Numbers in the text with separators removed ("1,000" -> "1000")."""
    return {n.replace(",", "") for n in _NUMBER.findall(unicodedata.normalize("NFKC", text))}


def support_score(answer: str, context: str) -> float:
    """Share of the answer's content tokens found in the context (1.0 when fully covered)."""
    if normalise(answer) and normalise(answer) in normalise(context):
        return 1.0
    ans = tokens(answer)
    if not ans:
        return 0.0
    ctx = set(tokens(context))
    return sum(1 for t in ans if t in ctx) / len(ans)


def is_supported(answer: str, context: str, threshold: float = 0.75) -> bool:
    """The answer's numbers all occur in the context and most of its content tokens do."""
    if not numbers(answer) <= numbers(context):
        return False
    return support_score(answer, context) >= threshold


def best_sentence(answer: str, context: str) -> str:
    """The context sentence that best supports the answer (the quote of a RAFT answer)."""
    sents = sentences(context)
    if not sents:
        return clean(context)[:300]
    ans = set(tokens(answer))
    ans_num = numbers(answer)

    def score(s: str) -> tuple[float, int]:
        toks = set(tokens(s))
        overlap = len(ans & toks) / (len(ans) or 1)
        return overlap + 0.5 * len(ans_num & numbers(s)), -len(s)

    return max(sents, key=score)


def doc_title(source: str, section: str) -> str:
    """A readable document name: the top heading when there is one, else the file name."""
    parts = [p for p in SECTION_SEP.split(section.strip()) if p] if section else []
    if parts:
        return strip_numbering(parts[0])
    stem = PurePath(source).stem
    return re.sub(r"[-_]+", " ", stem).strip() or source


def topic(section: str) -> str | None:
    """The last heading of a section path below the document title, numbering removed."""
    parts = [p for p in SECTION_SEP.split(section.strip()) if p] if section else []
    if len(parts) < 2:
        return None
    return strip_numbering(parts[-1]) or None


def strip_numbering(heading: str) -> str:
    """'2.1 Entitlement' -> 'Entitlement'; '第三章 休假' -> '休假'."""
    heading = clean(heading)
    heading = re.sub(r"^(?:\d+(?:\.\d+)*\.?|[IVX]+\.|第[一二三四五六七八九十百\d]+[章节条部分]+"
                     r"|[一二三四五六七八九十]+、)\s*", "", heading)
    return heading.strip()
