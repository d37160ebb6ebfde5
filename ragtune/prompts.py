"""The one prompt layout shared by training pairs (RAFT context samples) and serving (/ask).

Training and serving must format retrieved context identically, or the tuned model learns a
layout it never sees at serving time. Both sides call `build_messages`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ragtune.types import ChatMessage

DEFAULT_SYSTEM = (
    "You are {name}, the assistant of {organisation}. Answer the question. When context "
    "passages are given, answer only from them, cite the passage you rely on as [n] and quote "
    "its supporting sentence. If the passages do not contain the answer, say that you do not "
    "know.")

NO_ANSWER = "I don't know: the documents I have do not answer this question."
NO_ANSWER_ZH = "我不知道：现有文档中没有这个问题的答案。"

REFUSAL_PATTERNS = (
    "i don't know", "i do not know", "i dont know", "i'm not sure", "i am not sure",
    "cannot answer", "can't answer", "unable to answer", "no answer to this",
    "do not answer this", "don't answer this", "does not answer this",
    "do not contain the answer", "does not contain the answer", "don't contain the answer",
    "not mentioned in the", "no information about", "no information on",
    "不知道", "无法回答", "不能回答", "没有这个问题的答案", "没有相关信息", "未提及", "没有提到",
    "不清楚", "无法确定",
)


class Passage(Protocol):
    """Anything with a source, a section and a text (a `Chunk` is one)."""

    source: str
    section: str
    text: str


def system_prompt(name: str = "ragtune", organisation: str = "ragtune") -> str:
    return DEFAULT_SYSTEM.format(name=name, organisation=organisation)


_CONTEXT_HEAD, _QUESTION_HEAD, _SECTION_SEP = "Context:\n", "\n\nQuestion: ", " › "
CITATION = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class ContextPassage:
    """A passage read back from a formatted prompt (satisfies `Passage`)."""

    source: str
    section: str
    text: str


@dataclass(frozen=True)
class ContextPrompt:
    """A user turn in the `user_prompt` layout, parsed: its passages ([1] first) and question."""

    passages: list[ContextPassage]
    question: str


def format_passage(n: int, passage: Passage) -> str:
    """`[n] source › section` header line, then the text."""
    where = passage.source + (f" › {passage.section}" if passage.section else "")
    return f"[{n}] {where}\n{passage.text.strip()}"


def format_context(passages: Sequence[Passage]) -> str:
    return "\n\n".join(format_passage(i, p) for i, p in enumerate(passages, start=1))


def user_prompt(question: str, passages: Sequence[Passage] | None = None) -> str:
    """The user turn: the question alone, or context passages followed by the question."""
    if not passages:
        return question.strip()
    return f"{_CONTEXT_HEAD}{format_context(passages)}{_QUESTION_HEAD}{question.strip()}"


def parse_context(text: str) -> ContextPrompt | None:
    """The passages and question of a user turn written by `user_prompt`, or None when the
    text is not in that layout (a plain question). Passages are found by their running
    numbers (`[1] `, then `\n\n[2] ` ...), so blank lines inside a passage are kept; the result
    is accepted only if `user_prompt` renders it back to exactly `text`."""
    end = text.rfind(_QUESTION_HEAD)
    if not text.startswith(_CONTEXT_HEAD + "[1] ") or end < 0:
        return None
    body, question = text[len(_CONTEXT_HEAD):end], text[end + len(_QUESTION_HEAD):]
    starts, n = [0], 2
    while (at := body.find(f"\n\n[{n}] ", starts[-1])) >= 0:
        starts.append(at + 2)
        n += 1
    passages = []
    for k, (a, b) in enumerate(zip(starts, [*starts[1:], len(body) + 2], strict=True), start=1):
        head, _, passage_text = body[a:b - 2].partition("\n")
        where = head[len(f"[{k}] "):]
        source, _, section = where.partition(_SECTION_SEP)
        passages.append(ContextPassage(source, section, passage_text))
    parsed = ContextPrompt(passages, question)
    return parsed if user_prompt(question, passages) == text else None


def cited_numbers(answer: str) -> set[int]:
    """The passage numbers an answer cites as `[n]`."""
    return {int(m) for m in CITATION.findall(answer)}


def renumber_citations(answer: str, mapping: dict[int, int]) -> str:
    """Rewrite `[old]` citations as `[new]` (numbers missing from `mapping` stay as they are)."""
    return CITATION.sub(lambda m: f"[{mapping.get(int(m.group(1)), int(m.group(1)))}]", answer)


def build_messages(question: str, passages: Sequence[Passage] | None = None,
                   system: str | None = None) -> list[ChatMessage]:
    """Chat messages for a question, with optional retrieved passages and system prompt."""
    messages: list[ChatMessage] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user_prompt(question, passages)})
    return messages


def cited_answer(answer: str, n: int, quote: str = "") -> str:
    """RAFT-style answer, answer first: `answer [n]`, then the supporting sentence as
    `[n]: "quote"` when it adds to the answer. Answer first, so that a short token budget still
    holds the answer and the UI can show it on its own line."""
    answer, quote = answer.strip(), quote.strip()
    head = f"{answer} [{n}]"
    if len(quote) < 12 or quote.rstrip(".。") in answer:
        return head  # no sentence, or one the answer already holds
    return f'{head}\n[{n}]: "{quote}"'


def refusal(question: str) -> str:
    """The "I don't know" answer in the question's language."""
    return NO_ANSWER_ZH if is_chinese(question) else NO_ANSWER


def is_refusal(text: str) -> bool:
    """True when a reply says it does not know (English or Chinese phrasings)."""
    lowered = text.lower().replace("’", "'")
    return any(p in lowered for p in REFUSAL_PATTERNS)


def quoted_answer(question: str, n: int, sentence: str) -> str:
    """The extracted answer: the best passage sentence, cited and said to be a quote."""
    sentence = " ".join(sentence.split())
    if is_chinese(question):
        return f"文档原文 [{n}]：“{sentence}”"
    return f'The documents say [{n}]: "{sentence}"'


def is_chinese(text: str) -> bool:
    """True when CJK ideographs make up a notable share of the text."""
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    return cjk > 0 and cjk >= 0.2 * max(len(text.strip()), 1)
