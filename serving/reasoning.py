"""Keep a reasoning model's `<think>…</think>` apart from its answer (DeepSeek-R1 style).

The generation engines normalise their output so that reasoning, when there is any, is
wrapped in `<think>…</think>` at the start of the text, even when the chat template already
put the opening `<think>\\n` into the prompt (DeepSeek-R1 does). These helpers split such text
into `(reasoning, answer)`, whole or delta by delta while streaming.
"""

from __future__ import annotations

from collections.abc import Iterator

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def prompt_opens_thinking(prompt: str) -> bool:
    """True when a rendered prompt ends inside an unclosed `<think>` (R1's generation prompt)."""
    tail = prompt.rstrip()
    return tail.endswith(THINK_OPEN)


def split_reasoning(text: str, *, opened: bool | None = None) -> tuple[str, str]:
    """Split `"<think>r</think>answer"` into `("r", "answer")`; text without the tag is all answer.

    A bare `"r</think>answer"` (the prompt opened `<think>`) is split the same way. An opened
    but never closed `<think>` (generation cut by the token limit) is all reasoning, and so is
    unclosed text when `opened=True` says the prompt opened `<think>`.
    """
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN):
        body = stripped[len(THINK_OPEN):]
        reasoning, closed, answer = body.partition(THINK_CLOSE)
        if not closed:
            return body.strip(), ""
        return reasoning.strip(), answer.strip()
    if opened is not False and THINK_CLOSE in text and THINK_OPEN not in text:
        reasoning, _, answer = text.partition(THINK_CLOSE)
        return reasoning.strip(), answer.strip()
    if opened:
        return text.strip(), ""
    return "", text.strip()


class ReasoningSplitter:
    """Incremental `split_reasoning`: feed text deltas, get `("reasoning"|"content", text)` parts.

    Tag fragments split across deltas (`"<thi"` + `"nk>"`) are held back until they resolve.
    `opened` says what the caller knows about how the text starts:
    - `False` (the default): the text is normalised, as the transformers engine and the
      upstream backend make it (reasoning, if any, opens with `<think>`): plain text streams
      as it comes.
    - `True`: the prompt opened `<think>` and nothing added it back: the text is reasoning
      until a bare `</think>`.
    - `None` (not known: e.g. an upstream server whose chat template may open `<think>`):
      text that does not open with `<think>` is held back until a bare `</think>` shows it
      was reasoning, or the stream ends (then it is the answer). The streamed parts always
      equal `split_reasoning`; the price is that a plain answer arrives in one piece.
    """

    def __init__(self, opened: bool | None = False) -> None:
        self._opened = opened
        # start -> reasoning -> content | undecided -> (reasoning -> content) | content
        self._state = "start"
        self._buffer = ""
        self._lead = True  # strip whitespace right after a tag / at the start

    def feed(self, delta: str) -> Iterator[tuple[str, str]]:
        """Consume one delta and yield the parts that are certain by now."""
        self._buffer += delta
        while True:
            if self._state == "start":
                probe = self._buffer.lstrip()
                if probe.startswith(THINK_OPEN):
                    self._buffer = probe[len(THINK_OPEN):]
                    self._state, self._lead = "reasoning", True
                    continue
                if probe and not THINK_OPEN.startswith(probe[: len(THINK_OPEN)]):
                    self._state = {False: "content", True: "reasoning"}.get(self._opened,
                                                                           "undecided")
                    continue
                return  # still ambiguous (empty or a prefix of "<think>")
            if self._state == "undecided":
                if THINK_CLOSE not in self._buffer:
                    return  # reasoning (if a `</think>` comes) or the answer (at the end)
                self._state = "reasoning"
                continue
            if self._state == "reasoning":
                idx = self._buffer.find(THINK_CLOSE)
                if idx >= 0:
                    yield from self._emit("reasoning", self._buffer[:idx], final=True)
                    self._buffer = self._buffer[idx + len(THINK_CLOSE):]
                    self._state, self._lead = "content", True
                    continue
                keep = _partial_suffix(self._buffer, THINK_CLOSE)
                yield from self._emit("reasoning", self._buffer[: len(self._buffer) - keep])
                self._buffer = self._buffer[len(self._buffer) - keep:]
                return
            yield from self._emit("content", self._buffer)
            self._buffer = ""
            return

    def flush(self) -> Iterator[tuple[str, str]]:
        """Emit whatever is still held back at the end of the stream."""
        kind = "reasoning" if self._state == "reasoning" else "content"
        rest, self._buffer = self._buffer, ""
        yield from self._emit(kind, rest, final=True)

    def _emit(self, kind: str, text: str, final: bool = False) -> Iterator[tuple[str, str]]:
        if self._lead:
            text = text.lstrip()
            if text:
                self._lead = False
        if final and kind == "reasoning":
            text = text.rstrip()
        if text:
            yield kind, text


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
