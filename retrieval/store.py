"""The SQLite chunk store: the index's source of truth (documents, chunks, their embeddings).

FAISS and BM25 are derived from it and repaired from it (see `retrieval.index`), which is why each
chunk keeps its embedding as a float32 blob and its BM25 tokens. Every change to a document's chunks
is one transaction, and chunk ids are never reused (AUTOINCREMENT), so a chunk id always denotes the
same text and vector: comparing id sets is enough to tell whether FAISS/BM25 are in sync.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragtune.types import Chunk

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    sha256 TEXT,
    mtime_ns INTEGER,
    size INTEGER,
    format TEXT,
    encoding TEXT,
    split TEXT,
    status TEXT NOT NULL,
    error TEXT,
    chunk_count INTEGER NOT NULL DEFAULT 0,
    ingested_at REAL,
    checked_at REAL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    section TEXT NOT NULL,
    text TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    tokens TEXT NOT NULL,
    embedding BLOB NOT NULL,
    UNIQUE (document_id, position),
    UNIQUE (document_id, content_hash)
);
CREATE INDEX IF NOT EXISTS chunks_by_hash ON chunks(content_hash);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(document_id, position);
INSERT OR IGNORE INTO meta(key, value) VALUES ('generation', '0');
"""

CHUNK_COLUMNS = "c.id, d.source, c.position, c.section, c.text, c.page, c.row_start, c.row_end, c.ocr"
# Columns added after the first release: (name, SQL type and default). `ChunkStore` adds the missing ones to
# an existing database on open (ALTER TABLE ... ADD COLUMN keeps every row; old chunks read as "unknown").
ORIGIN_COLUMNS = (("page", "INTEGER"), ("row_start", "INTEGER"), ("row_end", "INTEGER"),
                  ("ocr", "INTEGER NOT NULL DEFAULT 0"))


@dataclass(frozen=True)
class DocumentRecord:
    """One ingested (or failed) file as the store knows it."""

    path: str  # absolute path: the document's identity
    source: str  # display path (relative to the working directory when under it)
    sha256: str | None
    mtime_ns: int | None
    size: int | None
    status: str  # "ok" | "error" | "duplicate"
    error: str | None
    chunks: int
    format: str | None = None
    encoding: str | None = None
    split: str | None = None  # "chunk_size/chunk_overlap" the chunks were made with
    ingested_at: float | None = None


@dataclass(frozen=True)
class NewChunk:
    """A chunk ready to be written: text plus its embedding and BM25 tokens."""

    position: int
    section: str
    text: str
    content_hash: str
    tokens: Sequence[str]
    embedding: np.ndarray
    page: int | None = None
    row_start: int | None = None
    row_end: int | None = None
    ocr: bool = False


def _chunk(r: Sequence) -> Chunk:
    """A Chunk from a row of CHUNK_COLUMNS."""
    return Chunk(r[0], r[1], r[2], r[3], r[4], page=r[5], row_start=r[6], row_end=r[7], ocr=bool(r[8]))


def _record(row: sqlite3.Row) -> DocumentRecord:
    return DocumentRecord(
        path=row["path"], source=row["source"], sha256=row["sha256"], mtime_ns=row["mtime_ns"],
        size=row["size"], status=row["status"], error=row["error"], chunks=row["chunk_count"],
        format=row["format"], encoding=row["encoding"], split=row["split"],
        ingested_at=row["ingested_at"])


class ChunkStore:
    """Thread-safe access to the SQLite database (WAL mode, one transaction per change)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False,
                                   isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")
            self._migrate()

    def _migrate(self) -> None:
        """Add the chunk-origin columns to a database made before they existed (one transaction)."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(chunks)")}
        missing = [(name, kind) for name, kind in ORIGIN_COLUMNS if name not in have]
        if not missing:
            return
        self._begin()
        try:
            for name, kind in missing:
                self._db.execute(f"ALTER TABLE chunks ADD COLUMN {name} {kind}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, params: Iterable = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    # -- meta -------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return {row["key"]: row["value"] for row in self._query("SELECT key, value FROM meta")}

    def set_meta(self, values: dict[str, str]) -> None:
        with self._lock:
            self._begin()
            self._db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                 list(values.items()))
            self._db.execute("COMMIT")

    def init_meta(self, values: dict[str, str]) -> None:
        """Set meta keys that are not set yet (first writer wins)."""
        with self._lock:
            self._begin()
            self._db.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                                 list(values.items()))
            self._db.execute("COMMIT")

    def generation(self) -> int:
        """A counter bumped by every committed change to the chunks."""
        return int(self._query("SELECT value FROM meta WHERE key='generation'")[0]["value"])

    # -- reads ------------------------------------------------------------------------------
    def documents(self) -> list[DocumentRecord]:
        return [_record(r) for r in self._query("SELECT * FROM documents ORDER BY source, path")]

    def document(self, path: str) -> DocumentRecord | None:
        rows = self._query("SELECT * FROM documents WHERE path = ? OR source = ? "
                           "ORDER BY path = ? DESC LIMIT 1", (path, path, path))
        return _record(rows[0]) if rows else None

    def chunk_ids(self) -> np.ndarray:
        rows = self._query("SELECT id FROM chunks ORDER BY id")
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def count_chunks(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM chunks")[0][0])

    def chunks(self, source: str | None = None) -> list[Chunk]:
        """All chunks (or one document's, by path or source) in document/position order."""
        sql = f"SELECT {CHUNK_COLUMNS} FROM chunks c JOIN documents d ON d.id = c.document_id"
        params: tuple = ()
        if source is not None:
            sql += " WHERE d.path = ? OR d.source = ?"
            params = (source, source)
        rows = self._query(sql + " ORDER BY d.source, d.path, c.position", params)
        return [_chunk(r) for r in rows]

    def chunks_by_ids(self, ids: Sequence[int]) -> dict[int, Chunk]:
        out: dict[int, Chunk] = {}
        for start in range(0, len(ids), 500):
            part = [int(i) for i in ids[start:start + 500]]
            rows = self._query(
                f"SELECT {CHUNK_COLUMNS} FROM chunks c JOIN documents d ON d.id = c.document_id "
                f"WHERE c.id IN ({','.join('?' * len(part))})", part)
            out.update({r[0]: _chunk(r) for r in rows})
        return out

    def embeddings(self, ids: Sequence[int] | None, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float32 matrix) for the given chunk ids, or for all chunks when ids is None."""
        if ids is None:
            rows = self._query("SELECT id, embedding FROM chunks ORDER BY id")
        else:
            rows = []
            for start in range(0, len(ids), 500):
                part = [int(i) for i in ids[start:start + 500]]
                rows += self._query(f"SELECT id, embedding FROM chunks WHERE id IN "
                                    f"({','.join('?' * len(part))})", part)
        out_ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        return out_ids, matrix.reshape(len(rows), dim).copy()

    def tokens(self) -> tuple[np.ndarray, list[list[str]]]:
        """(chunk ids, BM25 token lists) for every chunk, in id order."""
        rows = self._query("SELECT id, tokens FROM chunks ORDER BY id")
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return ids, [r[1].split(" ") if r[1] else [] for r in rows]

    def embeddings_by_hash(self, hashes: Iterable[str]) -> dict[str, bytes]:
        """Stored embeddings for content hashes already in the index (to avoid re-embedding)."""
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, bytes] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            rows = self._query(f"SELECT content_hash, embedding FROM chunks WHERE content_hash IN "
                               f"({','.join('?' * len(part))}) GROUP BY content_hash", part)
            found.update({r[0]: r[1] for r in rows})
        return found

    def iter_documents_with_sha(self, sha256: str) -> Iterator[DocumentRecord]:
        for row in self._query("SELECT * FROM documents WHERE sha256 = ? AND status = 'ok'",
                               (sha256,)):
            yield _record(row)

    # -- writes -----------------------------------------------------------------------------
    def _old_chunk_ids(self, path: str) -> list[int]:
        return [r[0] for r in self._db.execute(
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.path = ?",
            (path,))]

    def _upsert_document(self, rec: DocumentRecord, *, ingested: bool) -> int:
        now = time.time()
        self._db.execute(
            "INSERT INTO documents(path, source, sha256, mtime_ns, size, format, encoding, split,"
            " status, error, chunk_count, ingested_at, checked_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET"
            " source=excluded.source, sha256=excluded.sha256, mtime_ns=excluded.mtime_ns,"
            " size=excluded.size, format=excluded.format, encoding=excluded.encoding,"
            " split=excluded.split, status=excluded.status, error=excluded.error,"
            " chunk_count=excluded.chunk_count, checked_at=excluded.checked_at,"
            " ingested_at=COALESCE(excluded.ingested_at, documents.ingested_at)",
            (rec.path, rec.source, rec.sha256, rec.mtime_ns, rec.size, rec.format, rec.encoding,
             rec.split, rec.status, rec.error, rec.chunks, now if ingested else None, now))
        return int(self._db.execute("SELECT id FROM documents WHERE path = ?",
                                    (rec.path,)).fetchone()[0])

    def replace_document(self, rec: DocumentRecord,
                         chunks: Sequence[NewChunk]) -> tuple[list[int], list[int]]:
        """Atomically set a document's record and chunks; returns (removed ids, added ids)."""
        with self._lock:
            self._begin()
            try:
                removed = self._old_chunk_ids(rec.path)
                doc_id = self._upsert_document(rec, ingested=True)
                self._db.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
                added = []
                for ch in chunks:
                    cur = self._db.execute(
                        "INSERT INTO chunks(document_id, position, section, text, content_hash,"
                        " tokens, embedding, page, row_start, row_end, ocr)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (doc_id, ch.position, ch.section, ch.text, ch.content_hash,
                         " ".join(ch.tokens), np.asarray(ch.embedding, np.float32).tobytes(),
                         ch.page, ch.row_start, ch.row_end, int(ch.ocr)))
                    added.append(int(cur.lastrowid))
                self._bump()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return removed, added

    def update_record(self, rec: DocumentRecord) -> None:
        """Update a document's record (status, stat, error) without touching its chunks."""
        with self._lock:
            self._begin()
            try:
                self._upsert_document(rec, ingested=False)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def delete_document(self, path: str) -> list[int] | None:
        """Delete a document (by path or source) and its chunks; its chunk ids, None if unknown."""
        with self._lock:
            self._begin()
            try:
                row = self._db.execute("SELECT path FROM documents WHERE path = ? OR source = ? "
                                       "ORDER BY path = ? DESC LIMIT 1",
                                       (path, path, path)).fetchone()
                if row is None:
                    self._db.execute("ROLLBACK")
                    return None
                removed = self._old_chunk_ids(row[0])
                self._db.execute("DELETE FROM documents WHERE path = ?", (row[0],))
                self._bump()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return removed

    def _bump(self) -> None:
        self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                         "WHERE key = 'generation'")
