"""The teacher generator: any OpenAI-compatible chat endpoint writes the pairs.

DeepSeek's API, a local Ollama or vLLM, or ragtune's own server all work (`base_url` ending in
/v1). Requests run in a bounded thread pool; transient failures (connection errors, timeouts,
429, 5xx, a reply that is not the JSON asked for) are retried with exponential backoff; a bad
key or model name stops the run with a clear error. Every valid reply is stored in a SQLite
cache keyed by a hash of model + prompt and committed at once, so an interrupted run resumes
without asking the endpoint twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ingest.pairs.base import PairGenerator, Progress, QAPair
from ingest.pairs.llm import PROMPT_VERSION, pair_messages, parse_pairs, to_pairs
from ragtune.errors import ConfigError
from ragtune.types import ChatMessage, Chunk

log = logging.getLogger(__name__)


class TeacherCache:
    """SQLite map from a request hash to the validated reply text (thread-safe)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, "
                             "model TEXT, reply TEXT, created REAL)")
            self._db.commit()

    @staticmethod
    def key(model: str, messages: list[ChatMessage], temperature: float) -> str:
        blob = json.dumps([model, messages, temperature], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, model: str, reply: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?)",
                             (key, model, reply, time.time()))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class TeacherGenerator(PairGenerator):
    """Pairs written by a chat model behind an OpenAI-compatible API."""

    name = "teacher"

    def __init__(self, base_url: str, model: str, cache_path: Path, *, api_key: str = "",
                 concurrency: int = 4, retries: int = 4, timeout_s: float = 120.0,
                 temperature: float = 0.2, max_pairs: int = 6, backoff_s: float = 1.0) -> None:
        from openai import OpenAI

        self.base_url, self.model, self.max_pairs = base_url.rstrip("/"), model, max_pairs
        self.concurrency, self.retries, self.temperature = concurrency, retries, temperature
        self.backoff_s = backoff_s
        self.client = OpenAI(base_url=self.base_url, api_key=api_key or "not-needed",
                             max_retries=0, timeout=timeout_s)
        self.cache = TeacherCache(cache_path)
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    @property
    def fingerprint(self) -> str:
        return (f"teacher:{self.model}@{self.base_url}:v{PROMPT_VERSION}:n{self.max_pairs}"
                f":t{self.temperature}")

    def _ask(self, messages: list[ChatMessage]) -> str:
        """One chat completion; returns the reply text."""
        with self._count_lock:
            self.requests_sent += 1
        resp = self.client.chat.completions.create(model=self.model, messages=messages,
                                                   temperature=self.temperature)
        return resp.choices[0].message.content or ""

    def _fatal(self, err: Exception) -> Exception | None:
        """A ConfigError for failures that retrying cannot fix (bad key, unknown model)."""
        import openai

        if isinstance(err, openai.AuthenticationError | openai.PermissionDeniedError):
            return ConfigError("teacher_api_key", "***",
                               f"{self.base_url} refused the key ({err.status_code})")
        if isinstance(err, openai.NotFoundError):
            return ConfigError("teacher_model", self.model,
                               f"{self.base_url} does not serve it ({err.status_code}): "
                               f"{str(err)[:200]}")
        if isinstance(err, openai.BadRequestError):
            return ConfigError("teacher_base_url", self.base_url,
                               f"the endpoint rejected the request: {str(err)[:200]}")
        return None

    def pairs_for_chunk(self, chunk: Chunk) -> list[QAPair] | None:
        """Pairs for one chunk from the cache or the endpoint; None after the last retry."""
        import openai

        messages = pair_messages(chunk, self.max_pairs)
        key = TeacherCache.key(self.model, messages, self.temperature)
        cached = self.cache.get(key)
        if cached is not None:
            return to_pairs(chunk, parse_pairs(cached), "teacher", self.max_pairs)
        for attempt in range(self.retries + 1):
            try:
                reply = self._ask(messages)
                items = parse_pairs(reply)
            except (openai.APIError, ValueError) as err:
                fatal = self._fatal(err)
                if fatal is not None:
                    raise fatal from err
                log.info("teacher: chunk %s:%s attempt %d failed: %s", chunk.source,
                         chunk.position, attempt + 1, str(err)[:200])
                if attempt < self.retries:
                    time.sleep(min(self.backoff_s * 2 ** attempt, 30) * (1 + random.random() / 4))
                continue
            self.cache.put(key, self.model, reply)
            return to_pairs(chunk, items, "teacher", self.max_pairs)
        log.warning("teacher: giving up on chunk %s:%s after %d attempts", chunk.source,
                    chunk.position, self.retries + 1)
        return None

    def generate(self, chunks: Sequence[Chunk], progress: Progress | None = None
                 ) -> dict[int, list[QAPair]]:
        out: dict[int, list[QAPair]] = {}
        with ThreadPoolExecutor(max_workers=self.concurrency,
                                thread_name_prefix="teacher") as pool:
            futures = {pool.submit(self.pairs_for_chunk, c): c for c in chunks}
            try:
                for fut, chunk in futures.items():
                    pairs = fut.result()
                    if pairs is not None:
                        out[chunk.id] = pairs
                    if progress:
                        progress(1)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
        return out

    def close(self) -> None:
        self.cache.close()
        self.client.close()
