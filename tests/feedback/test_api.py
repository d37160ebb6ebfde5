"""POST /feedback and GET /feedback/stats through a live server (real uvicorn, real SQLite)."""

from __future__ import annotations

import pytest
import json
import sqlite3

from tests.feedback.conftest import LiveApi, start_api

pytestmark = pytest.mark.integration  # a live server (uvicorn, a browser)

QUESTION = "How many days of annual leave do employees get?"


def ask(client, question: str = QUESTION, **kw) -> dict:
    resp = client.post("/ask", json={"question": question, **kw})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_like_dislike_and_choice_are_stored_standalone(live_api: LiveApi) -> None:
    with live_api.client() as c:
        base, tuned = ask(c), ask(c, model="tuned")
        r = c.post("/feedback", json={"answer_id": base["id"], "rating": "dislike",
                                      "comment": "too vague"})
        assert r.status_code == 200, r.text
        assert r.json() == {"recorded": "rating", "question": QUESTION,
                            "answer_id": base["id"], "rating": "dislike", "model": "base"}
        assert c.post("/feedback", json={"answer_id": tuned["id"], "rating": "like"}).json()[
            "model"] == "tuned"
        r = c.post("/feedback", json={"question": QUESTION, "chosen_id": tuned["id"],
                                      "rejected_id": base["id"]})
        assert r.status_code == 200 and r.json()["recorded"] == "comparison"
        stats = c.get("/feedback/stats").json()
    assert (stats["likes"], stats["dislikes"], stats["comparisons"]) == (1, 1, 1)
    assert stats["wins"] == {"tuned": 1} and stats["losses"] == {"base": 1}
    assert stats["base_models"] == ["tiny-base"]
    with sqlite3.connect(live_api.settings.paths.feedback_db) as db:
        row = db.execute("SELECT question, answer, model, base_model, context, messages "
                         "FROM answers WHERE id=?", (base["id"],)).fetchone()
        rating = db.execute("SELECT rating, comment FROM ratings WHERE answer_id=?",
                            (base["id"],)).fetchone()
    assert row[0] == QUESTION and row[1] == base["answer"] and row[2:4] == ("base", "tiny-base")
    assert base["sources"][0]["text"] in row[4]
    seen = [r.messages for r in live_api.generator.calls if r.model == "base"][0]
    assert json.loads(row[5]) == seen  # the prompt exactly as the model saw it
    assert rating == ("dislike", "too vague")


def test_answers_persist_when_produced_and_survive_a_restart(live_api: LiveApi,
                                                             tmp_path) -> None:
    with live_api.client() as c:
        answer = ask(c)
        assert c.get("/feedback/stats").json()["answers"] == 1  # recorded before any feedback
    live_api.server.stop()
    again = start_api(live_api.settings.workspace)
    try:
        with again.client() as c:
            r = c.post("/feedback", json={"answer_id": answer["id"], "rating": "like"})
            assert r.status_code == 200, r.text
            assert c.get("/feedback/stats").json()["likes"] == 1
    finally:
        again.server.stop()


def test_errors_unknown_id_bad_bodies_and_auth(live_api: LiveApi) -> None:
    with live_api.client() as c:
        a = ask(c)
        other = ask(c, question="When is the reactor inspected?")
        r = c.post("/feedback", json={"answer_id": "nope", "rating": "like"})
        assert r.status_code == 404 and "unknown answer id 'nope'" in r.json()["error"]["message"]
        r = c.post("/feedback", json={"chosen_id": a["id"], "rejected_id": "missing"})
        assert r.status_code == 404 and "'missing'" in r.json()["error"]["message"]
        r = c.post("/feedback", json={"chosen_id": a["id"], "rejected_id": other["id"]})
        assert r.status_code == 422 and "different questions" in r.json()["error"]["message"]
        r = c.post("/feedback", json={"chosen_id": a["id"], "rejected_id": a["id"]})
        assert r.status_code == 422 and "same answer" in r.json()["error"]["message"]
        r = c.post("/feedback", json={"answer_id": a["id"], "rating": "meh"})
        assert r.status_code == 422
        r = c.post("/feedback", json={"answer_id": a["id"], "rating": "like",
                                      "chosen_id": a["id"], "rejected_id": other["id"]})
        assert r.status_code == 422 and "either" in r.text
        r = c.post("/feedback", json={"answer_id": a["id"], "rating": "like",
                                      "comment": "x" * 100_000})
        assert r.status_code == 413
    with live_api.client(key=None) as anon:
        assert anon.post("/feedback", json={"answer_id": a["id"], "rating": "like"}
                         ).status_code == 401
        assert anon.get("/feedback/stats").status_code == 401
    with live_api.client(key="wrong") as bad:
        assert bad.get("/feedback/stats").status_code == 401
    with live_api.client() as c:
        assert c.get("/feedback/stats").json()["likes"] == 0  # nothing was recorded


def test_changing_a_rating_and_a_choice_replaces_it(live_api: LiveApi) -> None:
    with live_api.client() as c:
        a, b = ask(c), ask(c, model="tuned")
        for rating in ("like", "dislike"):
            c.post("/feedback", json={"answer_id": a["id"], "rating": rating})
        c.post("/feedback", json={"chosen_id": a["id"], "rejected_id": b["id"]})
        c.post("/feedback", json={"chosen_id": b["id"], "rejected_id": a["id"]})
        stats = c.get("/feedback/stats").json()
        assert (stats["likes"], stats["dislikes"], stats["comparisons"]) == (0, 1, 1)
        assert stats["wins"] == {"tuned": 1}
        c.post("/feedback", json={"answer_id": a["id"], "rating": "none"})
        assert c.get("/feedback/stats").json()["dislikes"] == 0


def test_chat_completion_ids_take_feedback(live_api: LiveApi) -> None:
    with live_api.client() as c:
        r = c.post("/v1/chat/completions", json={
            "model": "tuned", "messages": [{"role": "user", "content": QUESTION}],
            "ragtune": {"use_rag": True}})
        assert r.status_code == 200, r.text
        answer_id = r.json()["id"]
        r = c.post("/feedback", json={"answer_id": answer_id, "rating": "like"})
        assert r.status_code == 200 and r.json()["model"] == "tuned"
