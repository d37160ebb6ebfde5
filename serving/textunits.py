"""Words, facts and sentences of questions, answers and passages: the text layer that the
grounding check (`serving/grounding.py`) and its gate score with.

English words are Snowball-stemmed without stop words ("how long/soon/often" is no topic term,
irregular verb forms map to their stem); Chinese runs are cut by jieba; *facts* are what must
be literally in a passage (numbers, codes such as TW-40, capitalised names); a passage splits
into sentences and table rows (a row carries its header row).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_CJK = "\u4e00-\u9fff\u3400-\u4dbf"
CJK_RUN = re.compile(rf"[{_CJK}]+")
_WORD = re.compile(rf"[^\W_{_CJK}]+(?:[-'.][^\W_{_CJK}]+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# Years and release numbers a question names (2024, 4.3.1); not amounts ("a claim of £4,000"
# is asked about a rule for a range) and not codes (S3).
ASKED_NUMBER = re.compile(r"(?<![\w.,£$€¥-])(?:(?:19|20)\d\d|\d+\.\d+\.\d+)(?![\w-])")
_FENCE = re.compile(r"^(?:```|~~~)")
_MARKER = re.compile(r"\[(\d{1,3})\]")
_EVIDENCE = re.compile(r'^\s*\[(\d{1,3})\]\s*[:：]\s*["“「](.*?)["”」]?\s*$', re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?。！？；;])\s+|(?<=[。！？；])|\n+")
_CJK_STOP = set("的了是在和与或吗呢么什多少几哪怎为如何请问该这那有个中上下对从到被把给让也都就而及其之")
# Chinese question and function words (jieba words): they say what is asked, not about what.
_CJK_STOPWORDS = set("""多少 多长 多長 多久 多快 多大 多远 多高 几号 几点 几天 幾天 哪里 哪裡 哪个 哪個 哪些 什么 什麼
怎么 怎麼 怎样 如何 是否 可以 需要 大家 每个 每個 是不是 有没有 应该 應該 要求 还是 请问""".split())
# "How long/soon/often ... ?": the word after "how" asks for a value; it is not a topic term.
_HOW = re.compile(r"\bhow\s+(\w+)", re.I)
_STOP = set("""a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further
get gets got had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours out
over own per same she should so some such than that the their theirs them then there these they
this those through to too under until up very was we were what when where which while who whom
why will with would you your yours yes also may must shall within without each every much many
says said according answer question passage passages document documents""".split())


# Irregular verb forms the stemmer leaves alone ("held" vs "hold for 30 seconds").
_IRREGULAR = {
    "held": "hold", "kept": "keep", "paid": "pay", "sent": "send", "made": "make", "took": "take",
    "taken": "take", "given": "give", "gave": "give", "written": "write", "wrote": "write",
    "bought": "buy", "lost": "lose", "met": "meet", "ran": "run", "sold": "sell", "told": "tell",
    "brought": "bring", "found": "find", "built": "build", "spent": "spend", "chosen": "choose",
    "chose": "choose", "broken": "break", "broke": "break", "shown": "show",
    "known": "know", "knew": "know", "grown": "grow", "drawn": "draw", "driven": "drive",
    "drove": "drive", "ridden": "ride", "won": "win", "began": "begin", "begun": "begin",
    "froze": "freeze", "frozen": "freeze", "hung": "hang", "fed": "feed", "led": "lead",
    "stood": "stand", "understood": "understand", "caught": "catch", "taught": "teach",
    "thought": "think", "fell": "fall", "fallen": "fall", "went": "go", "gone": "go",
    "done": "do", "did": "do", "seen": "see", "saw": "see", "said": "say", "came": "come",
}


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import snowballstemmer

    return snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    w = word.lower().strip("'.-")
    if w.endswith("'s"):
        w = w[:-2]
    if any(c.isdigit() for c in w):
        return w
    return _stemmer().stemWord(_IRREGULAR.get(w, w))


@lru_cache(maxsize=4096)
def _cjk_words(run: str) -> tuple[str, ...]:
    """jieba words of a CJK run (the BM25 index's segmentation), without one-character words
    (particles and the like) unless the run is a single character."""
    import jieba

    if len(run) == 1:
        return (run,) if run not in _CJK_STOP else ()
    words = [w for w in jieba.lcut(run)
             if len(w) > 1 and not set(w) <= _CJK_STOP and w not in _CJK_STOPWORDS]
    return tuple(words)


def _words(text: str, split_hyphens: bool) -> list[str]:
    """`_WORD` matches; with `split_hyphens`, hyphenated plain words as their parts
    ("factory-reset" is "factory reset"; codes such as HG-2 or SB-FX7-09 and short-part words
    such as Wi-Fi stay whole)."""
    out: list[str] = []
    for word in _WORD.findall(text):
        parts = word.split("-")
        if split_hyphens and len(parts) > 1 and all(len(p) > 2 and p.isalpha() for p in parts):
            out.extend(parts)
        else:
            out.append(word)
    return out


def terms(text: str, split_hyphens: bool = False) -> set[str]:
    """Content terms: stemmed non-stop words (numbers kept) and jieba words of CJK runs.

    Questions and claims split hyphenated words (`split_hyphens`), passages do not: asked
    "factory-reset", "Factory reset" in a passage matches; but a claim's "systemd" is not
    supported by a passage's `systemd-analyze` (a command name, not two words)."""
    out = {_stem(w) for w in _words(text, split_hyphens) if w.lower() not in _STOP}
    for run in CJK_RUN.findall(text):
        out.update(_cjk_words(run))
    out.discard("")
    return out


# Latinate noun/verb pairs that Snowball stems apart: decision/decided (decis/decid),
# description/describe (descript/describ), permission/permit (permiss/permit).
_FOLDS = (("script", "scrib"), ("cis", "cid"), ("miss", "mit"), ("vis", "vid"), ("sumpt", "sum"))


@lru_cache(maxsize=65536)
def fold(term: str) -> str:
    """The family root of a stemmed term: `decis` (decision) and `decid` (decided) are one.

    Used to rank quotes only, never by the gate or the check: it tells "The decision … was
    made by Bruce Perens" apart from a sentence that only restates the question's other words,
    but folded words must not make an unanswerable question look answerable (measured: with
    folding in the gate, "How much does a Brightwater Professional subscription cost?" passed
    on a neighbour's "subscribers")."""
    for suffix, root in _FOLDS:
        if term.endswith(suffix) and len(term) - len(suffix) >= 2:
            return term[: -len(suffix)] + root
    return term


def question_terms(question: str) -> set[str]:
    """The question's topic terms: `terms` without the value word of "how long/soon/often"."""
    asked = {_stem(m.group(1)) for m in _HOW.finditer(question)}
    return terms(question, split_hyphens=True) - asked


_PATH = re.compile(r"(?<![\w/.~])/[A-Za-z0-9_.+-]+(?:/[A-Za-z0-9_.+-]+)+")


def facts(text: str) -> set[str]:
    """What must be literally in the passage: numbers, codes (letters with digits), names, and
    file paths of two or more parts (/var/mail is not /var/spool/mail)."""
    found = {n.replace(",", "") for n in _NUMBER.findall(text)}
    found |= {p.rstrip(".").lower() for p in _PATH.findall(text)}
    for word in _WORD.findall(text):
        if any(c.isdigit() for c in word) and any(c.isalpha() for c in word):
            found.add(word.lower())
        elif word[:1].isupper() and word.lower() not in _STOP and len(word) > 1:
            found.add(word.lower())
    return found


def has_fact(fact: str, passage_lower: str) -> bool:
    if fact.startswith("/"):  # a path: whole, not the start of a longer one
        return re.search(rf"(?<![\w/]){re.escape(fact)}(?![\w/])", passage_lower) is not None
    if fact.replace(".", "").isdigit():
        plain = passage_lower.replace(",", "")
        return re.search(rf"(?<![\d.]){re.escape(fact)}(?![\d]|\.\d)", plain) is not None
    return re.search(rf"(?<![^\W_]){re.escape(fact)}(?![^\W_])", passage_lower) is not None


_LATIN = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*")


def entities(question: str) -> set[str]:
    """What the question is about by name, which no retrieved passage may lack: its codes
    (letters with digits: TW-40, fcitx5) and, in a Chinese question, its Latin-script words of
    three letters or more (WireGuard, firewalld, APT). None of the retrieved passages naming
    the thing asked about means nothing relevant was found."""
    found = {w.lower() for w in _WORD.findall(question)
             if any(c.isdigit() for c in w) and any(c.isalpha() for c in w)}
    if CJK_RUN.search(question):
        found |= {w.lower() for w in _LATIN.findall(question) if len(w) >= 3}
    return found


def sentences(text: str) -> list[str]:
    """Sentences and table rows of a passage; a table row carries its header row."""
    out: list[str] = []
    header: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            if re.fullmatch(r"\|?[\s:|-]+\|?", stripped):
                continue  # the |---| separator
            if header is None:
                header = stripped
                out.append(stripped)
            else:
                out.append(f"{header}\n{stripped}")
            continue
        header = None
        if _FENCE.match(stripped):
            continue  # a code fence line holds nothing to quote
        out.extend(s.strip() for s in _SENTENCE_END.split(stripped) if s and s.strip())
    return [u for u in out if _WORD.search(u) or CJK_RUN.search(u)]


def split_answer(answer: str) -> tuple[str, list[tuple[int, str]], list[int]]:
    """(claim, quotes as (n, text), cited n's) of an answer in the cited layout."""
    quotes = [(int(n), q.strip()) for n, q in _EVIDENCE.findall(answer)]
    claim = _EVIDENCE.sub("", answer)
    cited = [int(n) for n in _MARKER.findall(answer)]
    claim = _MARKER.sub(" ", claim)
    claim = re.sub(r"\s+", " ", claim).strip().strip("\"'“”「」").strip()
    return claim, quotes, list(dict.fromkeys(cited))
