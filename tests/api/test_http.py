"""The HTTP API on a real uvicorn: /ask with and without retrieval, SSE, /generate, models,
auth, limits, CORS, JSON errors and the h2c-upgrade body (Java's HttpClient default)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.config import ApiConfig
from serving.config import AssistantConfig
from tests.fakes import EchoGenerator
from ragtune.prompts import NO_ANSWER, NO_ANSWER_ZH, build_messages, system_prompt
from tests.serving_fixtures import serving, settings_for

pytestmark = pytest.mark.integration  # a live server (uvicorn, a browser)

QUESTION = "How many days of annual leave do employees get?"


@pytest.fixture(scope="module")
def echo():
    return EchoGenerator(adapters=["tuned"])


@pytest.fixture(scope="module")
def server(tmp_path_factory, echo, retriever):
    app = create_app(settings_for(tmp_path_factory.mktemp("ws")), generator=echo,
                     retriever=retriever)
    with serving(app) as url:
        yield url, app


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server[0], timeout=30) as http:
        yield http


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event, data) pairs of a server-sent-events body."""
    events = []
    for block in text.strip().split("\n\n"):
        event = next((line[7:] for line in block.splitlines() if line.startswith("event: ")), None)
        data = "\n".join(line[6:] for line in block.splitlines() if line.startswith("data: "))
        events.append((event, data))
    return events


def test_ask_with_rag_prompts_in_training_layout_and_returns_retrieved_chunks(
        client, echo, retriever) -> None:
    body = client.post("/ask", json={"question": QUESTION, "top_k": 2}).json()
    hits = retriever.search(QUESTION, 2)
    assert [(s["source"], s["chunk_index"], s["text"]) for s in body["sources"]] == \
        [(h.chunk.source, h.chunk.position, h.chunk.text) for h in hits]
    assert [s["n"] for s in body["sources"]] == [1, 2]
    assert body["sources"][0]["score"] == pytest.approx(hits[0].score, abs=1e-5)
    expected = build_messages(QUESTION, [h.chunk for h in hits], system_prompt())
    assert echo.calls[-1].messages == expected
    assert body["answer"] == f"[base] {expected[-1]['content']}"
    assert "Employees get 25 days" in expected[-1]["content"]
    assert body["model"] == "base" and body["refused"] is False
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert {"retrieval_ms", "generation_ms"} <= set(body["timings"])


def test_ask_without_rag_sends_the_question_alone(client, echo) -> None:
    body = client.post("/ask", json={"question": QUESTION, "use_rag": False,
                                     "model": "tuned"}).json()
    assert body["sources"] == [] and body["answer"] == f"[tuned] {QUESTION}"
    assert echo.calls[-1].messages == build_messages(QUESTION, None, system_prompt())
    assert echo.calls[-1].model == "tuned"


def test_answers_are_remembered_by_id(client, server) -> None:
    body = client.post("/ask", json={"question": QUESTION, "top_k": 1}).json()
    stored = server[1].state.services.assistant.store.get(body["id"])
    assert stored.question == QUESTION and stored.answer == body["answer"]
    assert stored.model == "base" and stored.context.startswith("[1] handbook/leave.md")


def test_ask_streams_sources_deltas_and_done(client) -> None:
    with client.stream("POST", "/ask", json={"question": QUESTION, "top_k": 2,
                                             "stream": True}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(resp.read().decode())
    kinds = [e for e, _ in events]
    assert kinds[0] == "sources" and kinds[-1] == "done" and kinds.count("answer") > 3
    first, done = json.loads(events[0][1]), json.loads(events[-1][1])
    deltas = "".join(json.loads(d)["delta"] for e, d in events if e == "answer")
    assert deltas == done["answer"] and first["id"] == done["id"]
    assert first["sources"] == done["sources"] and len(done["sources"]) == 2


def test_generate_keeps_the_plain_recipe_shape(client) -> None:
    resp = client.get("/generate", params={"prompt": "Say hello"})
    assert resp.json() == {"generated_text": "[base] Say hello"}


def test_models_and_unknown_models(client) -> None:
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == ["base", "tuned"]
    for name in ("nope", "../../etc/passwd", "/etc/passwd"):
        resp = client.post("/ask", json={"question": "hi", "model": name})
        assert resp.status_code == 404
        assert "available: base, tuned" in resp.json()["error"]["message"]


def test_errors_are_json(client) -> None:
    for resp in (client.get("/missing"), client.delete("/ask"),
                 client.post("/ask", content=b"{not json", headers={"content-type": "application/json"}),
                 client.post("/ask", json={})):
        assert resp.status_code in (404, 405, 422)
        assert resp.headers["content-type"] == "application/json"
        assert resp.json()["error"]["message"]
    assert "question" in client.post("/ask", json={}).json()["error"]["message"]


def test_no_relevant_passage_means_i_do_not_know(tmp_path, retriever) -> None:
    gen = EchoGenerator()
    app = create_app(settings_for(tmp_path), generator=gen, retriever=retriever,
                     assistant_config=AssistantConfig(relevance_threshold=2.0))
    with serving(app) as url:
        english = httpx.post(f"{url}/ask", json={"question": QUESTION}).json()
        chinese = httpx.post(f"{url}/ask", json={"question": "员工有多少天年假？"}).json()
        plain = httpx.post(f"{url}/ask", json={"question": QUESTION, "use_rag": False}).json()
    assert english["answer"] == NO_ANSWER and english["refused"] and english["sources"] == []
    assert chinese["answer"] == NO_ANSWER_ZH
    assert len(gen.calls) == 1 and plain["answer"] == f"[base] {QUESTION}"


def test_without_an_index_rag_is_a_clear_error(tmp_path) -> None:
    app = create_app(settings_for(tmp_path), generator=EchoGenerator())
    with serving(app) as url:
        resp = httpx.post(f"{url}/ask", json={"question": QUESTION})
        assert resp.status_code == 409 and "ingest" in resp.json()["error"]["message"]
        assert httpx.get(f"{url}/health").json()["index"] is False
        assert httpx.post(f"{url}/ask", json={"question": QUESTION, "use_rag": False}).status_code == 200


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, retriever):
    api = ApiConfig(api_key="s3cret", max_question_chars=50, max_new_tokens_limit=64,
                    max_top_k=3, max_body_bytes=2048)
    app = create_app(settings_for(tmp_path_factory.mktemp("ws")), generator=EchoGenerator(),
                     retriever=retriever, api_config=api)
    with serving(app) as url:
        yield url


AUTH = {"Authorization": "Bearer s3cret"}


def test_auth_on(guarded) -> None:
    assert httpx.get(f"{guarded}/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}):
        resp = httpx.post(f"{guarded}/ask", json={"question": "hi"}, headers=headers)
        assert resp.status_code == 401, headers
        assert resp.headers["www-authenticate"] == "Bearer" and resp.json()["error"]["message"]
        assert httpx.get(f"{guarded}/v1/models", headers=headers).status_code == 401
        assert httpx.get(f"{guarded}/generate", params={"prompt": "x"}, headers=headers).status_code == 401
    assert httpx.post(f"{guarded}/ask", json={"question": "hi"}, headers=AUTH).status_code == 200
    assert httpx.get(f"{guarded}/v1/models", headers=AUTH).status_code == 200


def test_auth_off(client) -> None:
    assert client.post("/ask", json={"question": "hi", "use_rag": False}).status_code == 200


@pytest.mark.parametrize(("path", "body", "status", "words"), [
    ("/ask", {"question": "x" * 51}, 413, "max_question_chars"),
    ("/ask", {"question": "   "}, 422, "`question` is empty"),
    ("/ask", {"question": "hi", "max_new_tokens": 65}, 422, "max_new_tokens_limit"),
    ("/ask", {"question": "hi", "top_k": 4}, 422, "max_top_k"),
    ("/ask", {"question": "hi", "max_new_tokens": 0}, 422, "max_new_tokens"),
    ("/ask", {"question": "hi", "temperature": 5}, 422, "temperature"),
    ("/ask", {"question": "hi", "pad": "x" * 3000}, 413, "max_body_bytes"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 51}]}, 413,
     "max_question_chars"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 65},
     422, "max_new_tokens_limit"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2}, 422, "n"),
    ("/v1/chat/completions", {"messages": [{"role": "system", "content": "hi"}]}, 422, "user"),
    ("/v1/chat/completions", {"messages": []}, 422, "messages"),
])
def test_limits(guarded, path, body, status, words) -> None:
    resp = httpx.post(f"{guarded}{path}", json=body, headers=AUTH)
    assert resp.status_code == status
    assert words in resp.json()["error"]["message"]


def test_generate_prompt_limit(guarded) -> None:
    resp = httpx.get(f"{guarded}/generate", params={"prompt": "x" * 51}, headers=AUTH)
    assert resp.status_code == 413 and "max_question_chars" in resp.json()["error"]["message"]


def test_chunked_body_over_the_limit(guarded) -> None:
    def chunks():
        yield b'{"question": "hi", "pad": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    resp = httpx.post(f"{guarded}/ask", content=chunks(),
                      headers={**AUTH, "content-type": "application/json"})
    assert resp.status_code == 413 and "max_body_bytes" in resp.json()["error"]["message"]


def raw_request(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes over a socket and read one HTTP/1.1 response."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        while len(body) < int(headers.get("content-length", 0)):
            body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def test_h2c_upgrade_request_keeps_its_body(server) -> None:
    """Java's HttpClient offers `Upgrade: h2c` on plain http; the body must still arrive."""
    body = json.dumps({"question": "Does the body survive the upgrade offer?",
                       "use_rag": False}).encode()
    request = (b"POST /ask HTTP/1.1\r\nHost: localhost\r\n"
               b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
               b"HTTP2-Settings: AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA\r\n"
               b"Content-Type: application/json\r\n"
               + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    status, headers, payload = raw_request(server[0], request)
    assert status == 200, payload
    assert json.loads(payload)["answer"] == "[base] Does the body survive the upgrade offer?"


def test_cors(tmp_path: Path) -> None:
    listed = create_app(settings_for(tmp_path), generator=EchoGenerator(),
                        api_config=ApiConfig(cors_origins=["http://ui.example"]))
    anyone = create_app(settings_for(tmp_path), generator=EchoGenerator(),
                        api_config=ApiConfig(cors_origins=["*"]))
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    with serving(listed) as url:
        ok = httpx.options(f"{url}/ask", headers={**preflight, "Origin": "http://ui.example"})
        bad = httpx.options(f"{url}/ask", headers={**preflight, "Origin": "http://evil.example"})
    assert ok.headers["access-control-allow-origin"] == "http://ui.example"
    assert ok.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in bad.headers
    with serving(anyone) as url:
        star = httpx.options(f"{url}/ask", headers={**preflight, "Origin": "http://x.example"})
    assert star.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in star.headers


def test_docs_and_health(client) -> None:
    assert "swagger" in client.get("/docs").text.lower()
    assert "/ask" in client.get("/openapi.json").json()["paths"]
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["models"] == ["base", "tuned"]
