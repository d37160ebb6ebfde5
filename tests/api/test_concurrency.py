"""The served engine under concurrency, on a real uvicorn: adapters never leak between
concurrent requests, 64 simultaneous requests are all answered or refused with 503, a client
that disconnects stops its generation, and a request past its timeout gets a JSON 504."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from api.app import create_app
from api.config import ApiConfig
from serving.config import EngineConfig
from serving.engine import TransformersGenerator
from serving.reasoning import split_reasoning
from tests.serving_fixtures import reference_output, serving, settings_for

pytestmark = pytest.mark.integration  # a live server (uvicorn, a browser)

PROMPTS = ["What is the capital?", "Tell me about the reactor and its safety policy, please.",
           "hi", "Where do I file expense reports?"]


@pytest.fixture(scope="module")
def served(adapter_workspace, tiny_llama_dir):
    settings = settings_for(adapter_workspace, generator=str(tiny_llama_dir))
    engine = TransformersGenerator.from_settings(settings, EngineConfig(max_batch_size=8))
    app = create_app(settings, generator=engine)
    with serving(app) as url:
        yield url, engine
    engine.close()


def chat(url: str, model: str, prompt: str, n: int = 6, stream: bool = False) -> str:
    body = {"model": model, "max_tokens": n, "stream": stream,
            "messages": [{"role": "user", "content": prompt}]}
    resp = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    resp.raise_for_status()
    if not stream:
        return resp.json()["choices"][0]["message"]["content"]
    chunks = [json.loads(line[6:]) for line in resp.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def test_adapters_do_not_leak_between_concurrent_requests(served, adapter_workspace,
                                                           tiny_llama_dir) -> None:
    url, engine = served
    expected = {}
    for model in engine.models():
        adapter = None if model == "base" else adapter_workspace / "runs" / model / "adapter"
        for prompt in PROMPTS:
            messages = [{"role": "user", "content": prompt}]
            text = reference_output(tiny_llama_dir, adapter, messages, 6)
            expected[model, prompt] = split_reasoning(text)[1]
    assert len({expected[m, PROMPTS[0]] for m in engine.models()}) == 3
    jobs = [(m, p, i % 3 == 0) for i, (m, p) in enumerate(
        (m, p) for _ in range(2) for p in PROMPTS for m in engine.models())]
    before = sum(engine.finished.values())
    with ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(lambda job: chat(url, *job[:2], stream=job[2]), jobs))
    for (model, prompt, _), text in zip(jobs, got, strict=True):
        assert text == expected[model, prompt], (model, prompt)
    assert sum(engine.finished.values()) - before == len(jobs)


def test_64_concurrent_requests_are_answered_or_refused(tmp_path, tiny_llama_dir) -> None:
    engine = TransformersGenerator.load(str(tiny_llama_dir), config=EngineConfig(
        max_batch_size=4, max_queue=8))
    app = create_app(settings_for(tmp_path), generator=engine)

    def one(i: int) -> tuple[int, str, dict]:
        if i % 4 == 3:
            body = {"messages": [{"role": "user", "content": PROMPTS[i % 4]}], "max_tokens": 8,
                    "stream": True}
            resp = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
        else:
            body = {"question": PROMPTS[i % 4], "use_rag": False, "max_new_tokens": 8}
            resp = httpx.post(f"{url}/ask", json=body, timeout=120)
        return resp.status_code, resp.text, dict(resp.headers)

    with serving(app) as url, ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    engine.close()
    statuses = [status for status, _, _ in results]
    assert len(results) == 64 and set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 8
    for status, text, headers in results:
        if status == 503:
            assert int(headers["retry-after"]) >= 1
            assert "queue is full" in json.loads(text)["error"]["message"]
        elif "event-stream" in headers["content-type"]:
            assert text.rstrip().endswith("data: [DONE]") and '"error"' not in text
        else:
            assert json.loads(text)["finish_reason"] in ("stop", "length")


def wait_for(predicate, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_disconnected_clients_stop_their_generation(served) -> None:
    url, engine = served
    cancelled = engine.finished["cancelled"]
    body = {"question": "hi", "use_rag": False, "max_new_tokens": 300, "model": "alpha"}
    with httpx.Client(timeout=60) as http, \
            http.stream("POST", f"{url}/ask", json={**body, "stream": True}) as resp:
        lines = resp.iter_lines()
        while not next(lines).startswith('data: {"type": "answer"'):
            pass  # leave after the first answer delta
    assert wait_for(lambda: engine.finished["cancelled"] == cancelled + 1)

    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as sock:  # not streamed: hang up early
        sock.sendall(b"POST /ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        time.sleep(0.05)
    assert wait_for(lambda: engine.finished["cancelled"] == cancelled + 2)
    assert engine.queued == 0


def test_timeouts_are_a_json_504(tmp_path, tiny_llama_dir) -> None:
    engine = TransformersGenerator.load(str(tiny_llama_dir), config=EngineConfig(
        request_timeout_s=0.2,
        repeat_guard_tokens=0, repeat_ban=False))  # the tiny base model loops on "\n"
    app = create_app(settings_for(tmp_path), generator=engine,
                     api_config=ApiConfig(request_timeout_s=0.2))
    with serving(app) as url:
        resp = httpx.post(f"{url}/ask", json={"question": "hi", "use_rag": False,
                                              "max_new_tokens": 300}, timeout=60)
    engine.close()
    assert resp.status_code == 504
    assert "request_timeout_s" in resp.json()["error"]["message"]


def test_64_concurrent_requests_none_lost_outputs_exact(adapter_workspace, tiny_llama_dir) -> None:
    """With room in the queue, 64 simultaneous requests (three models, streamed or not) all
    get 200 and exactly what plain transformers/peft generates for each alone."""
    settings = settings_for(adapter_workspace, generator=str(tiny_llama_dir))
    engine = TransformersGenerator.from_settings(settings, EngineConfig(
        max_batch_size=16, max_queue=64, prefill_chunk_tokens=16,
        repeat_guard_tokens=0, repeat_ban=False))
    models = engine.models()
    expected, bare_close = {}, set()
    for model in models:
        adapter = None if model == "base" else adapter_workspace / "runs" / model / "adapter"
        for prompt in PROMPTS:
            messages = [{"role": "user", "content": prompt}]
            text = reference_output(tiny_llama_dir, adapter, messages, 6)
            expected[model, prompt] = split_reasoning(text)[1]
            if "</think>" in text:  # a bare `</think>`: the stream splitter's known gap
                bare_close.add((model, prompt))  # (issue 12), so these are not streamed
    jobs = [(models[i % 3], PROMPTS[i % 4], i % 2 == 0 and (models[i % 3], PROMPTS[i % 4])
             not in bare_close) for i in range(64)]
    app = create_app(settings, generator=engine)
    with serving(app) as url, ThreadPoolExecutor(64) as pool:
        got = list(pool.map(lambda job: chat(url, *job[:2], stream=job[2]), jobs))
    engine.close()
    for (model, prompt, _), text in zip(jobs, got, strict=True):
        assert text == expected[model, prompt], (model, prompt)
    assert sum(engine.finished.values()) == 64


def test_health_answers_while_the_worker_holds_the_model(tmp_path, tiny_llama_dir) -> None:
    """A run that finished after start-up is attached off the event loop: /health and
    /v1/models answer while a (long) generation step holds the model."""
    from tests.serving_fixtures import make_adapter

    ws = tmp_path / "ws"
    (ws / "runs").mkdir(parents=True)
    settings = settings_for(ws, generator=str(tiny_llama_dir))
    engine = TransformersGenerator.from_settings(settings)
    make_adapter(tiny_llama_dir, ws / "runs" / "late" / "adapter", seed=6)
    engine._last_scan = -1e9
    with serving(create_app(settings, generator=engine)) as url:
        with engine._model_lock:
            health = httpx.get(f"{url}/health", timeout=30)
            listed = httpx.get(f"{url}/v1/models", timeout=30)
        assert health.status_code == listed.status_code == 200
        assert wait_for(lambda: "late" in httpx.get(f"{url}/health", timeout=30).json()["models"])
    engine.close()
    assert engine.adapter_loads["late"] == 1
