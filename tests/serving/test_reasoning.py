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
@pytest.mark.parametrize(("text", "expected"), CASES)
def test_streamed_split_matches_whole(text: str, expected: tuple[str, str], piece: int) -> None:
    """Bare `</think>` included (an upstream R1 server's text starts mid-reasoning), when the
    caller does not know how the text starts (`opened=None`)."""
    assert streamed(ReasoningSplitter(opened=None), text, piece) == expected
    if text.lstrip()[:1] == "<" or "</think>" not in text:  # normalised text streams alike
        assert streamed(ReasoningSplitter(), text, piece) == expected


def streamed(splitter: ReasoningSplitter, text: str, piece: int) -> tuple[str, str]:
    parts: dict[str, str] = {"reasoning": "", "content": ""}
    for i in range(0, len(text), piece):
        for kind, delta in splitter.feed(text[i:i + piece]):
            parts[kind] += delta
    for kind, delta in splitter.flush():
        parts[kind] += delta
    return parts["reasoning"].strip(), parts["content"].strip()


def test_bare_close_never_reaches_the_answer_events() -> None:
    splitter = ReasoningSplitter(opened=None)
    out = [p for piece in ("Passage 1 ", "covers it.\n</th", "ink>\n\nThe answer.")
           for p in splitter.feed(piece)] + list(splitter.flush())
    assert [k for k, _ in out if k == "content"] and all(
        "Passage" not in t and "think" not in t for k, t in out if k == "content")


@pytest.mark.parametrize("piece", [1, 4, 100])
def test_hints_say_how_the_text_starts(piece: int) -> None:
    # opened=True: the prompt opened <think>; the first content waits for the close tag.
    assert streamed(ReasoningSplitter(opened=True), "weigh it</think>Answer", piece) == \
        ("weigh it", "Answer")
    assert streamed(ReasoningSplitter(opened=True), "cut off", piece) == ("cut off", "")
    assert split_reasoning("cut off", opened=True) == ("cut off", "")
    # The default (normalised text: reasoning would open with <think>): plain text streams at
    # once; not knowing (None), it waits for a `</think>` that never comes.
    assert list(ReasoningSplitter().feed("Just an answer")) == [("content", "Just an answer")]
    unknown = ReasoningSplitter(opened=None)
    assert list(unknown.feed("Just an answer")) == []
    assert list(unknown.flush()) == [("content", "Just an answer")]


def test_tag_prefix_is_not_swallowed() -> None:
    splitter = ReasoningSplitter()
    out = list(splitter.feed("<th")) + list(splitter.feed("ese are answers")) + list(splitter.flush())
    assert "".join(t for _, t in out) == "<these are answers"
    assert {k for k, _ in out} == {"content"}


def test_prompt_opens_thinking() -> None:
    assert prompt_opens_thinking("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_thinking("<|im_start|>assistant\n")
