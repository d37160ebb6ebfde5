"""Fit an over-long RAFT row into `cutoff_len` by dropping whole distractor passages.

Cutting a context prompt in the middle by token count can remove the very passage the answer
cites, which teaches the model to answer without support. So a row that is too long first loses
whole passages that no reply cites (the longest first, so that as few as possible go), never the
oracle passage (the one cited as `[n]`) nor the answer, and always keeps at least one passage.
The remaining passages are renumbered 1..k as serving numbers them, and the replies' citations
follow. Only a row that is still too long is then cut by tokens (`finetune.encode.truncate`).
The prompt layout is parsed back with `ragtune.prompts.parse_context`, so it lives in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ragtune.prompts import cited_numbers, parse_context, renumber_citations, user_prompt
from ragtune.types import ChatMessage


@dataclass
class Shortened:
    """A row after dropping distractors: its messages, replies and how many passages went."""

    messages: list[ChatMessage]
    replies: list[str]
    dropped: int = 0


def drop_distractors(messages: Sequence[ChatMessage], replies: Sequence[str],
                     too_long: Callable[[list[ChatMessage], list[str]], bool]) -> Shortened:
    """Drop uncited passages from the last user turn while `too_long(messages, replies)`."""
    out = Shortened(list(messages), list(replies))
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    parsed = parse_context(messages[last]["content"]) if last is not None else None
    if parsed is None or not too_long(out.messages, out.replies):
        return out
    cited = set().union(*(cited_numbers(r) for r in replies))
    kept = list(range(1, len(parsed.passages) + 1))  # original numbers still in the prompt
    while True:
        spare = [n for n in kept if n not in cited]
        if len(kept) <= 1 or not spare:
            return out
        kept.remove(max(spare, key=lambda n: len(parsed.passages[n - 1].text)))
        mapping = {old: new for new, old in enumerate(kept, start=1)}
        content = user_prompt(parsed.question, [parsed.passages[n - 1] for n in kept])
        out.messages[last] = {**messages[last], "content": content}
        out.replies = [renumber_citations(r, mapping) for r in replies]
        out.dropped += 1
        if not too_long(out.messages, out.replies):
            return out
