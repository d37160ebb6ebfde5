"""The feedback store: answers, likes/dislikes and "A is better than B" choices in SQLite.

Answers are persisted when they are produced (the store subscribes to the Assistant's
`AnswerStore`, see `api.routes.feedback.install`), so feedback on an answer works after the
in-memory history evicted it or the server restarted. Each answer row stands alone: question,
retrieved context (the passages as the prompt showed them), the exact prompt messages
(`ragtune.prompts.build_messages`), the answer text, the model name ("base" or an adapter),
the base model's identity and timestamps. `feedback.export` turns the rows into DPO/KTO data.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from serving.history import Answer
from ragtune.errors import NotFoundError, RagtuneError
from ragtune.models import cuda_available
from ragtune.prompts import build_messages, system_prompt
from ragtune.settings import EMBEDDED_GENERATOR, GPU_GENERATOR, Settings

log = logging.getLogger(__name__)

Rating = Literal["like", "dislike"]
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    id TEXT PRIMARY KEY,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    reasoning TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL,
    base_model TEXT NOT NULL,
    context TEXT NOT NULL DEFAULT '',
    sources TEXT NOT NULL DEFAULT '[]',
    messages TEXT NOT NULL,
    refused INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    recorded REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ratings (
    answer_id TEXT PRIMARY KEY REFERENCES answers(id),
    rating TEXT NOT NULL CHECK (rating IN ('like', 'dislike')),
    comment TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS comparisons (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    question TEXT NOT NULL,
    chosen_id TEXT NOT NULL REFERENCES answers(id),
    rejected_id TEXT NOT NULL REFERENCES answers(id),
    comment TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS answers_question ON answers(question);
"""


class FeedbackStoreError(RagtuneError):
    """The feedback database cannot be opened or is not a ragtune feedback store."""

    exit_code = 3
    http_status = 500


class FeedbackConflict(RagtuneError):
    """A comparison that makes no sense: one answer twice, or answers to different questions."""

    http_status = 422


def base_model_identity(settings: Settings) -> str:
    """The base model the service generates with, as recorded with each answer.

    "auto" is resolved the way the engine resolves it; a local directory becomes its absolute
    path; an upstream backend is named by its upstream model.
    """
    if settings.generator_backend == "openai":
        return f"openai:{settings.upstream_model or settings.generator}"
    spec = settings.generator
    if spec == "auto":
        spec = GPU_GENERATOR if cuda_available() else EMBEDDED_GENERATOR
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_dir() else spec


@dataclass(frozen=True)
class StoredAnswer:
    """One persisted answer, everything a training row needs."""

    id: str
    question: str
    answer: str
    model: str
    base_model: str
    context: str
    messages: list[dict[str, str]]
    refused: bool
    created: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> StoredAnswer:
        return cls(row["id"], row["question"], row["answer"], row["model"], row["base_model"],
                   row["context"], json.loads(row["messages"]), bool(row["refused"]),
                   row["created"])


class FeedbackStore:
    """SQLite (WAL) store of answers and the feedback on them; safe to share between threads."""

    def __init__(self, path: Path, base_model: str = "unknown", system: str | None = None) -> None:
        self.path, self.base_model, self.system = Path(path), base_model, system
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._health_lock = threading.Lock()
        self.failures, self.last_error, self._last_ok = 0, None, True
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30,
                                         isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            with self.transaction() as conn:
                for statement in filter(str.strip, SCHEMA.split(";")):
                    conn.execute(statement)
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise FeedbackStoreError(
                        f"{self.path} has feedback schema {version}; this ragtune knows "
                        f"{SCHEMA_VERSION} (upgrade ragtune)")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            raise FeedbackStoreError(f"cannot open the feedback store {self.path}: {err}") from err

    @classmethod
    def from_settings(cls, settings: Settings) -> FeedbackStore:
        return cls(settings.paths.feedback_db, base_model_identity(settings),
                   system_prompt(settings.assistant_name, settings.organisation))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` … `COMMIT` (rolled back on error), serialised in-process."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------------ answers
    def record_answer(self, answer: Answer, system: str | None = None) -> None:
        """Persist an answer (idempotent); `FeedbackStoreError` (naming it) when SQLite fails."""
        system = system if system is not None else self.system
        messages = getattr(answer, "messages", None) or build_messages(  # exact turns if kept
            answer.question, answer.sources or None, system)
        sources = json.dumps([s.to_dict() for s in answer.sources], ensure_ascii=False)
        try:
            self._insert_answer(answer, sources, messages)
        except sqlite3.Error as err:
            raise FeedbackStoreError(f"could not save answer {answer.id} to the feedback store "
                                     f"{self.path}: {err}") from err

    def persist(self, answer: Answer) -> None:
        """The `AnswerStore` listener: save an answer as it is served, never raising.

        The answer has been served already, so a failure cannot be returned to the client:
        it is logged at error level (answer id and reason) and counted for `/health`,
        because feedback on that answer will fail until the store works again.
        """
        try:
            self.record_answer(answer)
        except FeedbackStoreError as err:
            with self._health_lock:
                self.failures += 1
                self.last_error, self._last_ok = str(err), False
            log.error("answer %s was served but NOT saved (feedback on it will fail): %s",
                      answer.id, err)
        else:
            with self._health_lock:
                self._last_ok = True

    def health(self) -> dict[str, Any]:
        """`ok` (the last save worked), `failures` since start and the `last_error`."""
        with self._health_lock:
            return {"ok": self._last_ok, "failures": self.failures, "last_error": self.last_error}

    def _insert_answer(self, answer: Answer, sources: str, messages: list) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO answers (id, question, answer, reasoning, model, "
                "base_model, context, sources, messages, refused, created, recorded) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (answer.id, answer.question, answer.answer, answer.reasoning, answer.model,
                 self.base_model, answer.context, sources,
                 json.dumps(messages, ensure_ascii=False), int(answer.refused), answer.created,
                 time.time()))

    def __call__(self, answer: Answer) -> None:
        self.persist(answer)

    def has_answer(self, answer_id: str) -> bool:
        with self._lock:
            row = self._conn.execute("SELECT 1 FROM answers WHERE id=?", (answer_id,)).fetchone()
        return row is not None

    def get_answer(self, answer_id: str) -> StoredAnswer:
        """The stored answer, or `NotFoundError` naming the id."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM answers WHERE id=?", (answer_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no answer with id {answer_id!r}: use the `id` that /ask or "
                                "/v1/chat/completions returned")
        return StoredAnswer.from_row(row)

    # ------------------------------------------------------------------------ feedback
    def rate(self, answer_id: str, rating: Rating, comment: str = "") -> StoredAnswer:
        """Like or dislike an answer; a new rating of the same answer replaces the old one."""
        if rating not in ("like", "dislike"):
            raise FeedbackConflict(f"rating must be 'like' or 'dislike', got {rating!r}")
        answer = self.get_answer(answer_id)
        with self.transaction() as conn:
            conn.execute("INSERT INTO ratings (answer_id, rating, comment, created) "
                         "VALUES (?,?,?,?) ON CONFLICT(answer_id) DO UPDATE SET "
                         "rating=excluded.rating, comment=excluded.comment, "
                         "created=excluded.created", (answer_id, rating, comment, time.time()))
        return answer

    def unrate(self, answer_id: str) -> None:
        """Withdraw a like/dislike (a toggled-off thumb in the UI)."""
        self.get_answer(answer_id)
        with self.transaction() as conn:
            conn.execute("DELETE FROM ratings WHERE answer_id=?", (answer_id,))

    def compare(self, chosen_id: str, rejected_id: str, question: str | None = None,
                comment: str = "") -> int:
        """Record "chosen is better than rejected"; a new choice on the same two answers
        replaces the old one (either order). Returns the comparison id."""
        if chosen_id == rejected_id:
            raise FeedbackConflict("chosen_id and rejected_id are the same answer; "
                                   "compare two different answers")
        chosen, rejected = self.get_answer(chosen_id), self.get_answer(rejected_id)
        if _norm(chosen.question) != _norm(rejected.question):
            raise FeedbackConflict(
                f"the answers are to different questions ({chosen.question!r} vs "
                f"{rejected.question!r}); compare answers to the same question")
        if question is not None and _norm(question) != _norm(chosen.question):
            raise FeedbackConflict(f"question {question!r} is not the question the answers "
                                   f"answer ({chosen.question!r})")
        with self.transaction() as conn:
            conn.execute("DELETE FROM comparisons WHERE (chosen_id=? AND rejected_id=?) OR "
                         "(chosen_id=? AND rejected_id=?)",
                         (chosen_id, rejected_id, rejected_id, chosen_id))
            cur = conn.execute("INSERT INTO comparisons (question, chosen_id, rejected_id, "
                               "comment, created) VALUES (?,?,?,?,?)",
                               (chosen.question, chosen_id, rejected_id, comment, time.time()))
            return int(cur.lastrowid or 0)

    # ------------------------------------------------------------------------ reading
    def ratings(self) -> list[tuple[StoredAnswer, Rating, str, float]]:
        """Every rated answer with its rating, comment and time, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT a.*, r.rating AS r_rating, r.comment AS r_comment, r.created AS r_created"
                " FROM ratings r JOIN answers a ON a.id = r.answer_id ORDER BY r.created"
            ).fetchall()
        return [(StoredAnswer.from_row(r), r["r_rating"], r["r_comment"], r["r_created"])
                for r in rows]

    def comparisons(self) -> list[tuple[StoredAnswer, StoredAnswer, str, float]]:
        """Every choice as (chosen, rejected, comment, time), oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT chosen_id, rejected_id, comment, created FROM comparisons "
                "ORDER BY created").fetchall()
        return [(self.get_answer(r["chosen_id"]), self.get_answer(r["rejected_id"]),
                 r["comment"], r["created"]) for r in rows]

    def stats(self) -> dict[str, Any]:
        """Counts of answers, likes, dislikes and choices, overall and per model / base model."""
        with self._lock:
            one = self._conn.execute
            counts = {
                "answers": one("SELECT COUNT(*) FROM answers").fetchone()[0],
                "likes": one("SELECT COUNT(*) FROM ratings WHERE rating='like'").fetchone()[0],
                "dislikes": one("SELECT COUNT(*) FROM ratings WHERE rating='dislike'"
                                ).fetchone()[0],
                "comparisons": one("SELECT COUNT(*) FROM comparisons").fetchone()[0],
                "questions_rated": one("SELECT COUNT(DISTINCT a.question) FROM ratings r "
                                       "JOIN answers a ON a.id=r.answer_id").fetchone()[0]}
            per_model = one(
                "SELECT a.model, a.base_model, "
                "SUM(r.rating='like') AS likes, SUM(r.rating='dislike') AS dislikes "
                "FROM ratings r JOIN answers a ON a.id=r.answer_id "
                "GROUP BY a.model, a.base_model ORDER BY a.model").fetchall()
            wins = one("SELECT a.model, COUNT(*) FROM comparisons c JOIN answers a "
                       "ON a.id=c.chosen_id GROUP BY a.model").fetchall()
            losses = one("SELECT a.model, COUNT(*) FROM comparisons c JOIN answers a "
                         "ON a.id=c.rejected_id GROUP BY a.model").fetchall()
            bases = one("SELECT DISTINCT base_model FROM answers a WHERE a.id IN "
                        "(SELECT answer_id FROM ratings UNION SELECT chosen_id FROM comparisons "
                        "UNION SELECT rejected_id FROM comparisons) ORDER BY base_model"
                        ).fetchall()
        return {**counts, "base_models": [b[0] for b in bases],
                "by_model": [{"model": r[0], "base_model": r[1], "likes": r[2] or 0,
                              "dislikes": r[3] or 0} for r in per_model],
                "wins": {m: n for m, n in wins}, "losses": {m: n for m, n in losses},
                "db": str(self.path)}


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()
