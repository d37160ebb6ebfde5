"""The prompt that asks a model (teacher or self) for pairs, and the parser of its JSON answer."""

from __future__ import annotations

import json
import re

from ingest.pairs.base import QAPair
from ingest.pairs.text import best_sentence
from ragtune.prompts import is_chinese
from ragtune.types import ChatMessage, Chunk

PROMPT_VERSION = "1"

SYSTEM = ("You write question-answer pairs for fine-tuning an assistant on an organisation's "
          "documents. You reply with JSON only.")

USER = """Passage from "{source}"{section}:
<<<
{text}
>>>

Write up to {n} questions that a colleague might ask and that this passage answers. Each answer
must be short, correct and supported by the passage alone; do not add outside knowledge.
Write the questions and answers in {language}. Make each question understandable without the
passage (name the product, policy or place it is about).
Reply with a JSON array only, no prose: [{{"question": "...", "answer": "..."}}]"""


def pair_messages(chunk: Chunk, n: int) -> list[ChatMessage]:
    """System and user messages asking for up to n pairs about one chunk."""
    language = "Chinese (简体中文)" if is_chinese(chunk.text) else "the language of the passage"
    section = f" (section: {chunk.section})" if chunk.section else ""
    user = USER.format(source=chunk.source, section=section, text=chunk.text.strip(), n=n,
                       language=language)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def _json_values(text: str):
    """Every JSON array or object that starts somewhere in the text, in order."""
    decoder = json.JSONDecoder()
    for m in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        yield value


def _real(value: object) -> bool:
    """A non-empty string that is not the prompt's "..." placeholder echoed back."""
    return isinstance(value, str) and bool(value.strip(" .…\n"))


def parse_pairs(text: str) -> list[dict[str, str]]:
    """The {question, answer} items of a model reply; ValueError when there is no valid list."""
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.S)
    text = re.sub(r"```(?:json)?", "", text)
    for value in _json_values(text):
        if isinstance(value, dict):
            value = next((v for k, v in value.items()
                          if k in ("pairs", "questions", "data", "items") and isinstance(v, list)),
                         None)
        if not isinstance(value, list):
            continue
        items = [{"question": it["question"].strip(), "answer": it["answer"].strip()}
                 for it in value if isinstance(it, dict)
                 and _real(it.get("question")) and _real(it.get("answer"))]
        if items:
            return items
    raise ValueError(f"no JSON list of {{question, answer}} objects in the reply: {text[:200]!r}")


def to_pairs(chunk: Chunk, items: list[dict[str, str]], rule: str, n: int) -> list[QAPair]:
    """QAPairs for a chunk; the quote is the chunk sentence that best supports each answer."""
    return [QAPair(it["question"], it["answer"], best_sentence(it["answer"], chunk.text),
                   chunk.source, chunk.position, rule) for it in items[:n]]
