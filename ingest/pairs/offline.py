"""The offline generator: questions and answers drawn from the documents themselves, no model.

Rules (English and Chinese): Q/A already in the text (Q:/A:, 问/答, FAQ headings ending in "?"),
definitions ("X is a Y", "X means Y", "X 是 Y", "X 指 Y"), key: value lines, table rows,
numbered and quantitative facts (the number is replaced by "how many"/"多少" to make the
question), and what a section says. Answers are taken from the chunk text, so they are
supported by construction; the quality stage checks it anyway.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from itertools import zip_longest

from ingest.pairs.base import PairGenerator, Progress, QAPair
from ingest.pairs.text import clean, doc_title, sentences, strip_numbering, topic
from ragtune.prompts import is_chinese
from ragtune.types import Chunk

Rule = Callable[[Chunk, str], Iterator[QAPair]]

_Q_LINE = re.compile(r"^(?:Q|Question|问|问题)\s*[:：.]\s*(.+)$", re.I)
_A_LINE = re.compile(r"^(?:A|Answer|答|回答)\s*[:：.]\s*(.*)$", re.I)
_HEADING = re.compile(r"^#{1,6}\s+(.+)$")
_PRONOUNS = {"it", "this", "that", "there", "he", "she", "they", "which", "these", "those",
             "here", "what", "who", "whose", "where", "when", "if", "each", "all", "everyone",
             "nobody", "one", "you", "we", "i"}
_UNITS = re.compile(r"(?:s|day|week|month|year|hour|minute|second|person|time|metre|meter|"
                    r"percent|kilogram|kg|km|m)$")
_DEF_EN = re.compile(
    r"^(?:(?:An?|The)\s+)?(?P<term>[A-Z][\w’'/()&-]*(?:\s+[\w’'/()&-]+){0,5}?)\s+"
    r"(?P<verb>is|are|means|refers to|is defined as|stands for)\s+"
    r"(?P<def>(?:(?:an?|the|any|one|our|a set of|used)\b|(?<=means )|(?<=refers to )"
    r"|(?<=defined as )|(?<=stands for )).{8,})$")
_DEF_ZH = re.compile(r"^(?:所谓)?(?P<term>[\u4e00-\u9fffA-Za-z0-9（）()“”\-]{2,16}?)[，,]?"
                     r"(?P<verb>是指|指的是|系指|是|指)(?P<def>[^，。；]{2}.{2,})$")
_ZH_BAD_END = set("不就还或都也只而正总凡但于若要即仍才均")
_ZH_BAD_START = ("本", "这", "那", "如果", "但", "我们", "所有", "每", "您", "你", "他", "她", "它", "该")
_KV = re.compile(r"^(?P<key>[A-Za-z0-9\u4e00-\u9fff][^:：|]{0,40}?)\s*[:：]\s*(?P<val>\S.{0,300})$")
_KV_SKIP = {"note", "notes", "example", "tip", "warning", "注意", "注", "例如", "提示", "q", "a",
            "question", "answer", "问", "答", "see", "source"}
_WHO = re.compile(r"\b(?:owner|manager|contact|lead|director|head|author|approver|officer|"
                  r"responsible|chair)\b|负责人|联系人|经理|主管", re.I)
_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|"
           "December")
_SPELLED = ("one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|"
            "thirty|forty|fifty|sixty|hundred")
_NOT_UNIT = ("is|was|are|were|has|have|had|and|or|to|in|on|at|of|for|by|with|the|a|an|that|"
             "which|as|but|if|released|launched")
_META_KEY = re.compile(r"number|code|revision|version|date|cycle|firmware|phone|e-?mail|address|"
                       r"\bid\b|reference|status|classification|编号|版本|日期|电话|地址", re.I)
_NUM_EN: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?:[$€£¥]|\b(?:USD|EUR|GBP|CNY|RMB)\s?)\d[\d,]*(?:\.\d+)?"
                r"(?:\s?(?:million|billion|thousand))?"), "how much"),
    (re.compile(r"(?<![\w.-])\d+(?:\.\d+)?\s?(?:%|percent\b)"), "what percentage"),
    (re.compile(r"\b(?:at\s+)?\d{1,2}[:.]\d{2}(?:\s?(?:am|pm|a\.m\.|p\.m\.))?(?!\d)", re.I),
     "at what time"),
    (re.compile(rf"\b(?:on\s+|by\s+)?\d{{1,2}}\s+(?:{_MONTHS})(?:\s+\d{{4}})?|"
                rf"\b(?:on\s+|by\s+)?(?:{_MONTHS})\s+\d{{1,2}}(?:,\s*\d{{4}})?"), "date"),
    (re.compile(r"\b(?:in|since|from)\s+(?:19|20)\d{2}\b"), "year"),
    (re.compile(r"(?<![\w./-])(?:19|20)\d{2}(?=\s+[a-z])"), "which"),
    (re.compile(rf"(?<![\w./-])(?:(?!(?:19|20)\d{{2}}\b)\d(?:[\d,]*\d)?(?:\.\d+)?(?=\s+(?!{_NOT_UNIT}\b)"
                rf"[A-Za-z][a-z-]+)|(?i:{_SPELLED})(?=\s+[a-z-]+s\b))(?![\w./-]*[-/]\d)"),
     "how many"),
]
_NUM_ZH: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\d{4}年\d{1,2}月\d{1,2}日|\d{1,2}月\d{1,2}日"), "哪一天"),
    (re.compile(r"\d{4}年(?!\d)"), "哪一年"),
    (re.compile(r"\d+(?:\.\d+)?\s?[%％]"), "百分之多少"),
    (re.compile(r"(?<![第\d.,])(?:\d(?:[\d,]*\d)?(?:\.\d+)?|[两三四五六七八九十]+)(?=\s?(?:个工作日|工作日|个月|"
                r"小时|分钟|周|天))"), "多少"),
    (re.compile(r"(?<![第\d.,A-Za-z-])\d(?:[\d,]*\d)?(?:\.\d+)?(?=\s?(?:万元|千元|元|次|人|名|岁|公里|公斤|"
                r"米|倍|页|台|件|年|日|月|级|分))"), "多少"),
]


def _pair(chunk: Chunk, q: str, a: str, quote: str, rule: str, short: str = "") -> QAPair:
    return QAPair(q.strip(), a.strip(), quote.strip(), chunk.source, chunk.position, rule,
                  short.strip())


def _lc(text: str) -> str:
    """Lower-case the first letter unless the words look like a name or acronym."""
    words = text.split()
    if len(words) > 1 and words[1][:1].isupper():
        return text  # "Skelding Point access", "Tuesday Tide"
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text


def _prose(text: str, *, kv: bool = False) -> list[str]:
    """Sentences of the chunk that are not headings or table rows (nor `Key: value` lines)."""
    lines = [ln for ln in text.splitlines()
             if not _HEADING.match(ln.strip()) and not _is_table_line(ln.strip())]
    sents = sentences("\n".join(lines))
    return sents if kv else [s for s in sents if _kv(s) is None]


def qa_in_text(chunk: Chunk, title: str) -> Iterator[QAPair]:
    """Q:/A:, 问/答 blocks and FAQ headings that end with a question mark."""
    lines = [clean(ln) for ln in chunk.text.splitlines()]
    lines = [ln for ln in lines if ln]
    i = 0
    while i < len(lines):
        q = _Q_LINE.match(lines[i])
        if q and i + 1 < len(lines) and (a := _A_LINE.match(lines[i + 1])):
            body = [a.group(1)] if a.group(1) else []
            j = i + 2
            while j < len(lines) and not _Q_LINE.match(lines[j]) and len(body) < 4:
                body.append(lines[j])
                j += 1
            answer = " ".join(body)
            if answer:
                yield _pair(chunk, q.group(1), answer, answer, "qa")
            i = j
            continue
        i += 1
    for m in re.finditer(r"^#{1,6}\s+(.+[?？])\s*$\n+((?:(?!#).+\n?){1,4})", chunk.text, re.M):
        answer = " ".join(sentences(m.group(2))[:2])
        if answer:
            yield _pair(chunk, strip_numbering(m.group(1)), answer, answer, "faq")
    head = topic(chunk.section)
    if head and head.endswith(("?", "？")):
        body = _prose(chunk.text)[:2]
        if body:
            yield _pair(chunk, head, " ".join(body), body[0], "faq")


def definitions(chunk: Chunk, title: str) -> Iterator[QAPair]:
    """"X is a Y" / "X means Y" / "X 是 Y" / "X 指 Y" sentences."""
    for sent in _prose(chunk.text):
        if is_chinese(sent):
            m = _DEF_ZH.match(sent)
            if not m or m.group("term")[-1] in _ZH_BAD_END or m.group("term").startswith(
                    _ZH_BAD_START):
                continue
            term = m.group("term")
            q = f"{term}指什么？" if "指" in m.group("verb") else f"什么是{term}？"
            yield _pair(chunk, q, sent, sent, "definition")
            continue
        m = _DEF_EN.match(sent)
        words = {w.lower() for w in m.group("term").split()} if m else set()
        if not m or m.group("term").split()[0] in ("A", "An", "The") or words & _PRONOUNS:
            continue
        term, verb = m.group("term").strip(), m.group("verb")
        if verb == "means" or verb == "refers to":
            q = f"What does {term} mean?"
        elif verb == "stands for":
            q = f"What does {term} stand for?"
        else:
            q = f"What {'are' if verb == 'are' else 'is'} {term}?"
        yield _pair(chunk, q, sent, sent, "definition")


def _kv(line: str) -> tuple[str, str] | None:
    """(key, value) when a cleaned line is a short `Key: value` line."""
    m = _KV.match(line)
    if not m:
        return None
    key, val = m.group("key").strip(), m.group("val").strip().rstrip(".。")
    if key[-1].isdigit() and val[0].isdigit():
        return None  # a time such as 8:00
    if (key.lower() in _KV_SKIP or len(key.split()) > 4 or len(key) > 8 and is_chinese(key)
            or re.search(r"[.!?,;\"“”。！？，；]|\b(?:is|are|was|were)\b", key)):
        return None
    return key, val


def key_values(chunk: Chunk, title: str) -> Iterator[QAPair]:
    """`Key: value` lines become "What is the key of <document>?"."""
    for raw in chunk.text.splitlines():
        line = clean(raw)
        kv = _kv(line)
        if kv is None or raw.strip().startswith("|"):
            continue
        key, val = kv
        if re.fullmatch(r"(?:19|20)\d{2}", key):
            q, a = f"What happened in {key}, according to the {title}?", f"In {key}: {val}."
        elif is_chinese(key):
            q, a = f"{title}的{key}是什么？", f"{key}：{val}。"
        elif _WHO.search(key) or _META_KEY.search(key):
            who = "Who" if _WHO.search(key) else "What"
            q, a = f"{who} is the {_lc(key)} of the {title}?", f"The {_lc(key)} is {val}."
        else:
            q, a = f"According to the {title}, what is “{key}”?", f"{key}: {val}."
        yield _pair(chunk, q, a, line, "key_value", val)


def _is_table_line(line: str) -> bool:
    return line.startswith("|") or " | " in line


def _cells(line: str) -> list[str]:
    return [clean(c) for c in line.strip().strip("|").split("|")]


def _table_rows(text: str) -> Iterator[tuple[list[str], list[str], str]]:
    """(header, row cells, raw row) of 'a | b' tables (Markdown, HTML, DOCX). A block's first
    row is its header when a |---| line follows it or, without one, when it has no digits (a
    chunk that starts inside a table has no header and is skipped)."""
    lines = [ln.strip() for ln in text.splitlines()]
    i = 0
    while i < len(lines):
        if not _is_table_line(lines[i]):
            i += 1
            continue
        block = []
        while i < len(lines) and _is_table_line(lines[i]):
            block.append(lines[i])
            i += 1
        ruled = len(block) > 1 and all(set(c) <= set("-: ") for c in _cells(block[1]))
        header = _cells(block[0])
        if not ruled and re.search(r"\d", block[0]):
            continue
        for raw in block[2 if ruled else 1:]:
            cells = _cells(raw)
            if len(cells) == len(header) and not all(set(c) <= set("-: ") for c in cells):
                yield header, cells, raw.strip("|").strip()


def tables(chunk: Chunk, title: str) -> Iterator[QAPair]:
    """Each table row: "what is the <column> for <first cell>?" for up to two columns."""
    for header, cells, raw in _table_rows(chunk.text):
        key = cells[0]
        if not key or len(header) < 2:
            continue
        for col, value in list(zip(header[1:], cells[1:], strict=False))[:2]:
            if not value or not col:
                continue
            if is_chinese(col + key):
                q = f"在{title}中，{header[0]}为“{key}”时，{col}是什么？"
                a = f"{header[0]}为“{key}”时，{col}是{value}。"
            else:
                q = f"In the {title}, what is the {_lc(col)} for {_lc(header[0])} “{key}”?"
                a = f"For {_lc(header[0])} “{key}”, the {_lc(col)} is {value}."
            yield _pair(chunk, q, a, raw, "table", value)


def _with_unit(number: str, rest: str) -> str:
    """"27" + " days of leave" -> "27 days"; up to three words, ending at a unit-like word."""
    words = rest.split()[:3]
    for i, word in enumerate(words):
        word = word.strip(".,;:()'’")
        if not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        if _UNITS.search(word):
            return " ".join([number, *[w.strip(".,;:()'’") for w in words[: i + 1]]])
    return number


def _echo_en(sent: str) -> tuple[str, str] | None:
    """Replace the first quantity of an English sentence by a wh-phrase: (question, quantity)."""
    for pattern, wh in _NUM_EN:
        m = pattern.search(sent)
        if not m:
            continue
        found = m.group(0)
        if wh in ("date", "year"):
            prep = found.split()[0].lower()
            wh = (f"{prep} what {wh}" if prep in ("on", "by", "in", "since", "from")
                  else f"what {wh}")
        if wh == "at what time" and not found.lower().startswith("at"):
            wh = "what time"
        before = sent[:m.start()]
        prev = before.split()[-1] if before.split() else ""
        if wh == "how many" and len(before.split()) > 1 and prev[:1].isupper():
            continue  # "Estuary 101", "OAuth 2.0": a name, not a quantity
        if wh in ("how many", "which"):
            before = re.sub(r"\bthe $", "", before)
        if wh == "how many":
            found = _with_unit(found, sent[m.end():])
        q = (before + wh + sent[m.end():]).rstrip(" .;:,") + "?"
        q = q[0].upper() + q[1:]
        return q, found.strip()
    return None


def _echo_zh(sent: str) -> tuple[str, str] | None:
    """Replace the first quantity of a Chinese sentence by 多少/哪一天: (question, quantity)."""
    for pattern, wh in _NUM_ZH:
        m = pattern.search(sent)
        if m:
            q = re.sub(r"\s*(多少|哪一天|哪一年|百分之多少)\s*", r"\1", sent[:m.start()] + wh
                       + sent[m.end():])
            return q.rstrip("。；;，,.") + "？", m.group(0)
    return None


def numeric_facts(chunk: Chunk, title: str) -> Iterator[QAPair]:
    """Sentences with numbers, dates and amounts become "how many/多少" questions."""
    for sent in _prose(chunk.text):
        zh = is_chinese(sent)
        if (len(sent) < 8) if zh else (len(sent.split()) < 5 or sent[-1] not in ".!?;:)\"”"):
            continue  # short, or a fragment (PDF table cells end without punctuation)
        if _Q_LINE.match(sent) or _A_LINE.match(sent):
            continue
        echo = _echo_zh(sent) if zh else _echo_en(sent)
        if echo:
            yield _pair(chunk, echo[0], sent, sent, "number", echo[1])


def section_summary(chunk: Chunk, title: str) -> Iterator[QAPair]:
    """"What does <document> say about <section>?" / "关于<section>，<document>有哪些规定？"."""
    body = _prose(chunk.text) or _prose(chunk.text, kv=True)
    if not body:
        return
    answer = " ".join(body[:2]) if len(" ".join(body[:2])) <= 500 else body[0]
    head = topic(chunk.section)
    if head and head.endswith(("?", "？")):
        return
    if head:
        q = (f"关于{head}，{title}有哪些规定？" if is_chinese(head + title)
             else f"What does the {title} say about {_lc(head)}?")
    elif chunk.position == 0:
        q = (f"{title}主要讲了什么？" if is_chinese(title + body[0])
             else f"What is the {title} about?")
    else:
        return
    yield _pair(chunk, q, answer, body[0], "section")


RULES: tuple[Rule, ...] = (qa_in_text, definitions, key_values, tables, numeric_facts,
                           section_summary)


class OfflineGenerator(PairGenerator):
    """Rule-based pairs from headings, definitions, facts, tables and Q/A text (no model)."""

    name = "offline"
    version = "1"

    @property
    def fingerprint(self) -> str:
        return f"offline-v{self.version}"

    def pairs_for_chunk(self, chunk: Chunk, title: str | None = None) -> list[QAPair]:
        """All candidate pairs, interleaved across rules so a per-chunk cap keeps variety."""
        title = title or doc_title(chunk.source, chunk.section)
        per_rule = [list(rule(chunk, title)) for rule in RULES]
        return [p for group in zip_longest(*per_rule) for p in group if p is not None]

    def generate(self, chunks: Sequence[Chunk], progress: Progress | None = None
                 ) -> dict[int, list[QAPair]]:
        titles = _titles(chunks)
        out: dict[int, list[QAPair]] = {}
        for chunk in chunks:
            out[chunk.id] = self.pairs_for_chunk(chunk, titles.get(chunk.source))
            if progress:
                progress(1)
        return out


def _titles(chunks: Sequence[Chunk]) -> dict[str, str]:
    """Document names for documents without headings: the first line of the first chunk when
    it reads like a title (short, no sentence punctuation), else the file name."""
    out: dict[str, str] = {}
    for c in chunks:
        if c.position != 0 or c.section:
            continue
        first = clean(next((ln for ln in c.text.splitlines() if ln.strip()), ""))
        if 2 <= len(first) <= 60 and not re.search(r"[.!?:。！？：]$", first):
            out[c.source] = first.title() if first.isupper() else first
    return out
