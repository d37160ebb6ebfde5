"""Fixtures for the API tests: a real uvicorn on loopback (in a thread), a sample corpus with a
StaticRetriever, a canned-reply generator and a reasoning (R1-style) fake generator."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from ragtune.fakes import StaticRetriever
from ragtune.settings import Settings, load_settings
from ragtune.types import Chunk, GenerationRequest, GenerationResult, Generator

CORPUS = [
    ("handbook/leave.md", "Leave", "Employees get 25 days of paid annual leave per calendar year."),
    ("handbook/leave.md", "Leave > Sick", "Sick leave needs a doctor's note after three days."),
    ("handbook/expenses.md", "Expenses", "Expense reports must be filed within 30 days of travel."),
    ("ops/reactor.md", "Safety", "The Northwind reactor is inspected under safety policy 7."),
    ("ops/drills.md", "Safety > Drills", "Fire drills take place every first Monday of the month."),
]


@pytest.fixture(scope="session")
def chunks() -> list[Chunk]:
    return [Chunk(i, src, i, sec, text) for i, (src, sec, text) in enumerate(CORPUS)]


@pytest.fixture(scope="session")
def retriever(chunks: list[Chunk]) -> StaticRetriever:
    return StaticRetriever(chunks)


def settings_for(workspace: Path, **overrides: object) -> Settings:
    """Settings for a test server rooted in `workspace` (env and YAML still apply)."""
    return load_settings(workspace=workspace, **overrides)


class ThinkingGenerator(Generator):
    """An R1-like fake: reasoning in `<think>…</think>`, then an answer citing [1].

    With `open_in_prompt`, the opening tag is left out of the text, as when the chat template
    already put `<think>\\n` into the prompt and the engine did not add it back."""

    def __init__(self, open_in_prompt: bool = False, piece: int = 3) -> None:
        self.open_in_prompt, self.piece = open_in_prompt, piece

    def models(self) -> list[str]:
        return ["base"]

    def text(self, req: GenerationRequest) -> str:
        body = "The first passage covers it.\n</think>\n\nEmployees get 25 days [1]."
        return body if self.open_in_prompt else "<think>\n" + body

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [GenerationResult(self.text(r), 10, 12) for r in requests]

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        text = self.text(request)
        for i in range(0, len(text), self.piece):
            yield text[i:i + self.piece]


@contextmanager
def serving(app) -> Iterator[str]:
    """Run `app` under a real uvicorn (ragtune's h11 config) on a free loopback port."""
    import uvicorn

    from api.commands import uvicorn_config

    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0, "warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
