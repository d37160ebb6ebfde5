"""The service's grounding contract end to end: each answer_kind through /ask and /v1 over a
real index (ingested with the deterministic hash embedder), the streamed verdict, the refusal
gate, the reranker in serving, and a tiny real model whose gibberish never reaches a user
unmarked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ragtune.settings import load_settings
from serving.config import AssistantConfig
from tests.fakes import CannedGenerator, hash_spec

DOCS = {
    "hr/leave.md": "# Annual leave\n\nFull-time employees receive 27 days of paid annual leave "
                   "per year, plus public holidays.\n\n# Carry-over\n\nEmployees may carry over "
                   "up to 3 days of unused leave into the next leave year.\n",
    "products/tw40.md": "# TW-40 warranty\n\nThe Tidewell TW-40 data logger carries a five-year "
                        "warranty covering parts and labour.\n",
    "zh/报销.md": "# 报销\n\n出差报销须在出差结束后30天内提交，并附上发票原件。\n",
}
LEAVE = "How many days of annual leave do full-time employees get?"
REPLIES = {"annual leave": "27 days [1]", "warranty": "3 days [1]", "报销": "30天内提交 [1]",
           "weigh": "The TW-40 weighs 2.4 kg [1]."}


@pytest.fixture(scope="module")
def index_workspace(tmp_path_factory) -> Path:
    from ingest.commands import ingest

    root = tmp_path_factory.mktemp("grounded")
    for name, text in DOCS.items():
        path = root / "docs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    workspace = root / "workspace"
    assert ingest([root / "docs"], workspace=workspace, embedder=hash_spec(64),
                  chunk_size=200, pairs="none") == 0
    return workspace


def client_for(workspace: Path, generator, **config) -> TestClient:
    settings = load_settings(workspace=workspace, embedder=hash_spec(64))
    cfg = AssistantConfig(**{"answerable_threshold": 0.0, **config})
    return TestClient(create_app(settings, generator=generator, assistant_config=cfg))


def ask(client: TestClient, question: str, **body) -> dict:
    response = client.post("/ask", json={"question": question, "top_k": 3, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_supported_answer_is_generated_and_says_by_which_passage(index_workspace):
    with client_for(index_workspace, CannedGenerator(REPLIES)) as client:
        body = ask(client, LEAVE)
    assert body["answer_kind"] == "generated" and body["answer"] == "27 days [1]"
    grounding = body["grounding"]
    assert grounding["supported"] and grounding["passage"] == 1 and grounding["checked"]
    assert "27 days" in grounding["sentence"] and body["sources"][0]["source"].endswith("hr/leave.md")
    assert body["generated"] == "" and not body["refused"]


def test_an_unsupported_answer_is_replaced_by_the_quoted_sentence(index_workspace):
    with client_for(index_workspace, CannedGenerator(REPLIES)) as client:
        body = ask(client, "How long is the Tidewell TW-40 warranty?")
    assert body["answer_kind"] == "extracted" and body["generated"] == "3 days [1]"
    assert body["answer"].startswith("The documents say [") and "five-year warranty" in body["answer"]
    assert not body["grounding"]["supported"] and body["grounding"]["reason"]
    n = body["grounding"]["passage"]
    assert body["sources"][n - 1]["source"].endswith("products/tw40.md") and body["citations"] == [n]


def test_refuse_and_flag_modes(index_workspace):
    question = "How long is the Tidewell TW-40 warranty?"
    with client_for(index_workspace, CannedGenerator(REPLIES), on_unsupported="refuse") as client:
        refused = ask(client, question)
    assert refused["answer_kind"] == "refused" and refused["refused"]
    assert refused["answer"].startswith("I don't know") and refused["sources"]
    with client_for(index_workspace, CannedGenerator(REPLIES), on_unsupported="flag") as client:
        flagged = ask(client, question)
    assert flagged["answer_kind"] == "generated" and flagged["answer"] == "3 days [1]"
    assert flagged["grounding"]["supported"] is False and flagged["grounding"]["reason"]


def test_chinese_answers_and_a_model_that_says_it_does_not_know(index_workspace):
    with client_for(index_workspace, CannedGenerator(REPLIES)) as client:
        chinese = ask(client, "出差报销需要在多少天内提交？")
        unknown = ask(client, "Who painted the canteen mural?")
    assert chinese["answer_kind"] == "generated" and chinese["grounding"]["supported"]
    assert unknown["answer_kind"] == "refused" and unknown["answer"] == "I don't know."
    assert unknown["grounding"]["reason"] == "the model said it does not know"


def test_a_model_refusal_past_the_gate_is_quoted_over_in_extract_mode(index_workspace):
    question = "How many days of paid leave does a full-time employee receive per year?"
    with client_for(index_workspace, CannedGenerator(REPLIES)) as client:  # replies "I don't know."
        extracted = ask(client, question)
    with client_for(index_workspace, CannedGenerator(REPLIES), on_unsupported="refuse") as client:
        refused = ask(client, question)
    assert extracted["answer_kind"] == "extracted" and "27 days" in extracted["answer"]
    assert extracted["generated"] == "I don't know."
    assert extracted["grounding"]["reason"] == "the model said it does not know"
    assert refused["answer_kind"] == "refused" and refused["answer"] == "I don't know."


def test_the_gate_refuses_before_generating_and_keeps_the_passages(index_workspace):
    generator = CannedGenerator(REPLIES)
    with client_for(index_workspace, generator, answerable_threshold=0.99) as client:
        body = ask(client, "How much does a TW-40 logger weigh?")
    assert body["answer_kind"] == "refused" and body["usage"]["completion_tokens"] == 0
    assert body["sources"] and body["grounding"]["checked"] is False
    assert body["grounding"]["answerability"] < 0.99


def test_without_retrieval_nothing_is_checked(index_workspace):
    with client_for(index_workspace, CannedGenerator(REPLIES)) as client:
        body = ask(client, LEAVE, use_rag=False)
    assert body["answer_kind"] == "generated" and body["grounding"]["checked"] is False


def _events(response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.iter_lines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def test_the_streamed_verdict_arrives_in_the_final_event(index_workspace):
    question = "How long is the Tidewell TW-40 warranty?"
    with client_for(index_workspace, CannedGenerator(REPLIES)) as client:
        with client.stream("POST", "/ask", json={"question": question, "stream": True}) as r:
            events = _events(r)
        streamed = "".join(e["delta"] for e in events if e["type"] == "answer")
        done = events[-1]
        assert streamed == "3 days [1]"  # what was streamed is never rewritten in place
        assert done["type"] == "done" and done["answer_kind"] == "extracted"
        assert done["generated"] == streamed and "five-year" in done["answer"]
        body = {"model": "base", "stream": True, "use_rag": True,
                "messages": [{"role": "user", "content": question}]}
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            chunks = _events(r)
        last = chunks[-1]
        assert last["choices"][0]["finish_reason"] == "stop"
        assert last["ragtune"]["answer_kind"] == "extracted" and "five-year" in last["ragtune"]["answer"]
        plain = client.post("/v1/chat/completions", json={**body, "stream": False}).json()
    assert plain["ragtune"]["answer_kind"] == "extracted"
    assert plain["choices"][0]["message"]["content"] == plain["ragtune"]["answer"]


def test_the_reranker_runs_in_serving_and_feeds_the_gate(index_workspace, tmp_path):
    from tests.evaluation.test_eval_e2e import save_tiny_cross_encoder

    directory = save_tiny_cross_encoder(tmp_path / "cross-encoder")
    settings = load_settings(workspace=index_workspace, embedder=hash_spec(64),
                             reranker=str(directory))
    app = create_app(settings, generator=CannedGenerator(REPLIES),
                     assistant_config=AssistantConfig(answerable_threshold=0.0))
    with TestClient(app) as client:
        assert app.state.services.assistant.reranker is not None
        body = ask(client, LEAVE)
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(directory), device="cpu")
    scores = [float(s) for s in model.predict([(LEAVE, s["text"]) for s in body["sources"]])]
    assert [s["score"] for s in body["sources"]] == pytest.approx(sorted(scores, reverse=True),
                                                                  abs=1e-4)
    assert 0.0 <= body["grounding"]["answerability"] <= 1.0


def test_a_missing_reranker_fails_at_start_up(index_workspace, tmp_path):
    from ragtune.errors import ModelNotFoundError

    settings = load_settings(workspace=index_workspace, embedder=hash_spec(64),
                             reranker=str(tmp_path / "nothing-here"))
    with pytest.raises(ModelNotFoundError):
        with TestClient(create_app(settings, generator=CannedGenerator(REPLIES))):
            pass


def test_a_tiny_real_model_never_reaches_a_user_unmarked(index_workspace, tiny_llama_dir):
    """Random weights write gibberish: every answer is either supported, a quote or a refusal."""
    settings = load_settings(workspace=index_workspace, embedder=hash_spec(64),
                             generator=str(tiny_llama_dir))
    app = create_app(settings, assistant_config=AssistantConfig(answerable_threshold=0.0))
    with TestClient(app) as client:
        for question in (LEAVE, "出差报销需要在多少天内提交？", "Who painted the canteen mural?"):
            body = ask(client, question, max_new_tokens=12, top_k=1)
            kind, verdict = body["answer_kind"], body["grounding"]
            assert kind in ("extracted", "refused") or verdict["supported"], body
            if kind == "extracted":
                assert body["answer"] != body["generated"]  # the model text is kept apart
                assert body["citations"] == [verdict["passage"]]
