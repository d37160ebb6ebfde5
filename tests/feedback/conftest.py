"""A live API for the feedback tests: `create_app` over a canned-reply generator with one
adapter and a StaticRetriever, feedback installed, real uvicorn on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fakes import EchoGenerator, StaticRetriever
from ragtune.settings import Settings, load_settings
from ragtune.types import Chunk

KEY = "feedback-test-key"
CORPUS = [("handbook/leave.md", "Leave", "Employees get 25 days of paid annual leave per year."),
          ("ops/reactor.md", "Safety", "The Northwind reactor is inspected under policy 7."),
          ("handbook/expenses.md", "Expenses", "Expense reports are due within 30 days.")]


@dataclass
class LiveApi:
    url: str
    settings: Settings
    server: object
    app: object
    generator: EchoGenerator

    def client(self, key: str | None = KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def start_api(workspace: Path, reply: str | None = None) -> LiveApi:
    """create_app + feedback.install, served by uvicorn in a thread."""
    from api.app import create_app
    from api.routes import feedback
    from ui.serving import serve_in_thread

    settings = load_settings(workspace=workspace, api_key=KEY, generator="tiny-base")
    chunks = [Chunk(i, s, i, sec, t) for i, (s, sec, t) in enumerate(CORPUS)]
    generator = EchoGenerator(reply, adapters=["tuned"])
    app = create_app(settings, generator=generator, retriever=StaticRetriever(chunks))
    feedback.install(app, settings)
    server = serve_in_thread(app)
    return LiveApi(server.url, settings, server, app, generator)


@pytest.fixture
def live_api(tmp_path: Path) -> Iterator[LiveApi]:
    api = start_api(tmp_path / "ws")
    yield api
    api.server.stop()
