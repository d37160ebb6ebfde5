"""The one prompt layout shared by training pairs (RAFT context samples) and serving (/ask).

Training and serving must format retrieved context identically, or the tuned model learns a
layout it never sees at serving time. Both sides call `build_messages`.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    return f"Context:\n{format_context(passages)}\n\nQuestion: {question.strip()}"


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
