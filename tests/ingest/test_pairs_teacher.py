"""The teacher generator against a small OpenAI-compatible server on loopback (uvicorn +
FastAPI in a thread): bounded concurrency, retries, JSON validation, and the cache that lets an
interrupted run resume without asking twice."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ingest.pairs import PairsConfig, build_pairs
from ingest.pairs.teacher import TeacherGenerator
from ragtune.errors import ConfigError
from ragtune.settings import load_settings
from ragtune.types import Chunk

pytestmark = pytest.mark.integration  # a live server (uvicorn, a browser)


@dataclass
class Teacher:
    """What the fake endpoint does and what it saw."""

    requests: int = 0
    answered: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    fail_status: int | None = None  # answer every request with this status
    ok_budget: int | None = None  # after this many good replies, fail with fail_status
    flaky: dict[str, list[str]] = field(default_factory=dict)  # passage -> failures to give
    delay_s: float = 0.05
    lock: threading.Lock = field(default_factory=threading.Lock)


def _reply(passage: str) -> str:
    """A valid pair list whose answer is the passage's first sentence (so it is supported)."""
    first = re.split(r"(?<=[.。])\s*", passage.strip())[0]
    subject = " ".join(first.split()[:4])
    return json.dumps([{"question": f"What does the passage say about {subject}?",
                        "answer": first}], ensure_ascii=False)


def make_app(state: Teacher) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        import asyncio

        body = await request.json()
        passage = body["messages"][-1]["content"].split("<<<\n", 1)[1].split("\n>>>", 1)[0]
        with state.lock:
            state.requests += 1
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            failures = state.flaky.get(passage)
            trouble = failures.pop(0) if failures else None
            failing = state.fail_status is not None and (
                state.ok_budget is None or state.answered >= state.ok_budget)
            if not trouble and not failing:
                state.answered += 1
        try:
            await asyncio.sleep(state.delay_s)
            if failing:
                return JSONResponse({"error": {"message": "down"}}, status_code=state.fail_status)
            if trouble == "429":
                return JSONResponse({"error": {"message": "slow down"}}, status_code=429)
            content = "Sure! Here you go: not json" if trouble == "garbage" else (
                f"```json\n{_reply(passage)}\n```")
            return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        finally:
            with state.lock:
                state.in_flight -= 1

    return app


@pytest.fixture()
def teacher():
    """(state, base_url) of a live server on a free loopback port."""
    state = Teacher()
    server = uvicorn.Server(uvicorn.Config(make_app(state), host="127.0.0.1", port=0,
                                           log_level="warning", http="h11"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield state, f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


def corpus(n_docs: int = 2, per_doc: int = 4, edit: str = "") -> list[Chunk]:
    return [Chunk(d * 10 + p + 1, f"doc{d}.md", p, f"Manual {d}",
                  f"The unit {d}-{p} logs water level every {p + 5} minutes{edit}. It is blue.")
            for d in range(n_docs) for p in range(per_doc)]


def _cfg(url: str, **kw) -> PairsConfig:
    base = dict(generator="teacher", teacher_base_url=url, teacher_model="tutor",
                teacher_api_key="sk-test", teacher_concurrency=2, teacher_retries=1,
                eval_file="", val_ratio=0.0, identity=False)
    return PairsConfig(**{**base, **kw})


@pytest.fixture()
def fast_backoff(monkeypatch):
    """Keep the exponential backoff but at millisecond scale."""
    orig = TeacherGenerator.__init__

    def init(self, *args, **kwargs):
        orig(self, *args, **{**kwargs, "backoff_s": 0.01})

    monkeypatch.setattr(TeacherGenerator, "__init__", init)


def test_interrupted_run_resumes_without_asking_twice(teacher, workspace, fast_backoff):
    state, url = teacher
    settings = load_settings(workspace=workspace)
    state.fail_status, state.ok_budget = 401, 3  # the key is revoked after 3 answers
    with pytest.raises(ConfigError, match="teacher_api_key"):
        build_pairs(settings, corpus(), _cfg(url))
    answered_before = state.answered
    assert 3 <= answered_before < 8  # the run stopped part-way
    state.fail_status, state.ok_budget, state.requests = None, None, 0
    report = build_pairs(settings, corpus(), _cfg(url))
    assert state.requests == 8 - answered_before  # only the chunks not answered before
    assert report.pairs == 8 and report.failed_chunks == 0
    state.requests = 0
    again = build_pairs(settings, corpus(), _cfg(url))
    assert state.requests == 0 and again.cached_documents == 2 and again.pairs == 8
    # one chunk changes: only it is asked (its document's other chunks hit the reply cache)
    chunks = corpus()
    chunks[1] = Chunk(chunks[1].id, chunks[1].source, 1, chunks[1].section,
                      chunks[1].text.replace("blue", "green"))
    build_pairs(settings, chunks, _cfg(url))
    assert state.requests == 1


def test_retries_with_backoff_then_gives_up_and_counts(teacher, workspace, fast_backoff):
    state, url = teacher
    chunks = corpus(1, 4)
    state.flaky = {chunks[0].text: ["429"], chunks[1].text: ["garbage"],
                   chunks[2].text: ["429", "garbage"]}  # 2 failures > 1 retry
    settings = load_settings(workspace=workspace)
    report = build_pairs(settings, chunks, _cfg(url, teacher_concurrency=3))
    assert report.failed_chunks == 1 and report.pairs == 3
    assert state.requests == 2 + 2 + 2 + 1
    assert state.max_in_flight <= 3
    # the failed chunk is not cached: the next run asks for it (and only it) again
    state.requests = 0
    report = build_pairs(settings, chunks, _cfg(url))
    assert state.requests == 1 and report.pairs == 4 and report.failed_chunks == 0


def test_concurrency_is_bounded(teacher, workspace):
    state, url = teacher
    state.delay_s = 0.15
    settings = load_settings(workspace=workspace)
    report = build_pairs(settings, corpus(3, 4), _cfg(url, teacher_concurrency=3))
    assert report.pairs == 12
    assert state.max_in_flight == 3  # parallel, but never more than asked


def test_unknown_model_is_a_config_error(workspace, tmp_path):
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat():
        return JSONResponse({"error": {"message": "model not found"}}, status_code=404)

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"
    try:
        with pytest.raises(ConfigError, match="teacher_model"):
            build_pairs(load_settings(workspace=workspace), corpus(1, 1), _cfg(url))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
