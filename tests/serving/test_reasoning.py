"""Keeping `<think>…</think>` apart from the answer, whole and streamed."""

from __future__ import annotations

import pytest

from serving.reasoning import ReasoningSplitter, prompt_opens_thinking, split_reasoning

CASES = [
    ("<think>\nweigh it\n</think>\n\nThe answer.", ("weigh it", "The answer.")),
    ("weigh it</think>The answer.", ("weigh it", "The answer.")),  # R1 prompt opened <think>
    ("<think>\ncut off by the token limit", ("cut off by the token limit", "")),
    ("Just an answer [1].", ("", "Just an answer [1].")),
    ("  <think></think>Answer", ("", "Answer")),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_split_reasoning(text: str, expected: tuple[str, str]) -> None:
    assert split_reasoning(text) == expected


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 100])
@pytest.mark.parametrize(("text", "expected"), [c for c in CASES if c[0].lstrip()[:1] == "<"
                                                or "</think>" not in c[0]])
def test_streamed_split_matches_whole(text: str, expected: tuple[str, str], piece: int) -> None:
    splitter = ReasoningSplitter()
    parts: dict[str, str] = {"reasoning": "", "content": ""}
    for i in range(0, len(text), piece):
        for kind, delta in splitter.feed(text[i:i + piece]):
            parts[kind] += delta
    for kind, delta in splitter.flush():
        parts[kind] += delta
    assert (parts["reasoning"].strip(), parts["content"].strip()) == expected


def test_tag_prefix_is_not_swallowed() -> None:
    splitter = ReasoningSplitter()
    out = list(splitter.feed("<th")) + list(splitter.feed("ese are answers")) + list(splitter.flush())
    assert "".join(t for _, t in out) == "<these are answers"
    assert {k for k, _ in out} == {"content"}


def test_prompt_opens_thinking() -> None:
    assert prompt_opens_thinking("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_thinking("<|im_start|>assistant\n")
