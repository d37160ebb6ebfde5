"""An answer that cannot be saved to the feedback store is logged loudly and shown in /health.

The store fails for real: a trigger in the SQLite file refuses new answer rows (what a full
disk or a broken file does to the INSERT), no mock.
"""

from __future__ import annotations

import logging
import sqlite3

import pytest

from tests.feedback.conftest import LiveApi

pytestmark = pytest.mark.integration  # a live uvicorn server

QUESTION = "How many days of annual leave do employees get?"


def refuse_answers(db) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON answers "
                     "BEGIN SELECT RAISE(ABORT, 'the disk says no'); END")


def test_a_failed_save_is_logged_and_reported_in_health(live_api: LiveApi, caplog) -> None:
    with live_api.client() as c:
        assert c.get("/health").json()["feedback_store"] == {
            "ok": True, "failures": 0, "last_error": None}
        refuse_answers(live_api.settings.paths.feedback_db)
        with caplog.at_level(logging.ERROR):
            answer = c.post("/ask", json={"question": QUESTION}).json()
        health = c.get("/health").json()
        feedback = c.post("/feedback", json={"answer_id": answer["id"], "rating": "like"})
    store = health["feedback_store"]
    assert store["ok"] is False and store["failures"] == 1
    assert "the disk says no" in store["last_error"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(answer["id"] in m and "the disk says no" in m for m in errors), errors
    # Feedback on the lost answer says why instead of a bare 404 or a 500 without a reason.
    assert feedback.status_code == 500, feedback.text
    assert "the disk says no" in feedback.json()["error"]["message"]
