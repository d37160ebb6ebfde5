"""The hybrid index: SQLite chunk store (source of truth) + FAISS (dense) + BM25 (keywords).

Files in the index directory:
- `chunks.sqlite`: documents, chunks, their embeddings and BM25 tokens (WAL, one transaction
  per document change);
- `faiss.index`, `bm25.npz`: derived, written atomically; each holds the chunk ids it covers,
  so on open (and when another process changed the store) they are compared with SQLite and
  repaired from it (missing vectors come from the stored embeddings: no model call);
- `index.json`: which embedder built the index, its dimension and the ingest settings.

A SIGKILL at any moment therefore leaves a usable, consistent index: SQLite rolls back the
unfinished transaction and the derived files are reconciled on the next open.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ragtune.errors import ConfigError, IndexMismatchError, NotFoundError, RagtuneError
from ragtune.prompts import is_chinese
from ragtune.types import Chunk, Embedder, Hit, Retriever, SearchMode
from retrieval.bm25 import BM25Index
from retrieval.embedders import english_only, same_embedder, split_name
from retrieval.faiss_index import DenseIndex
from retrieval.fusion import reciprocal_rank_fusion
from retrieval.store import ChunkStore, DocumentRecord, NewChunk

if TYPE_CHECKING:
    from ragtune.settings import Settings

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
DB_FILE, FAISS_FILE, BM25_FILE, META_FILE = "chunks.sqlite", "faiss.index", "bm25.npz", "index.json"
LOCK_FILE = "writer.lock"
MODES = ("hybrid", "dense", "bm25")
HYBRID_CANDIDATES = 40  # per ranking, before fusion (at least 4 x k)
QUERY_CACHE_SIZE = 512  # query vectors kept (LRU)


def embedder_spec(embedder: Embedder) -> str:
    """The spec that reloads an embedder (what `--embedder` takes)."""
    return getattr(embedder, "spec", None) or split_name(embedder.name)[0]


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON via a temp file and os.replace so readers never see a partial file."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class WriterLock:
    """An advisory exclusive lock (flock) so that only one ingest writes an index at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RagtuneError(f"another ingest (pid {holder}) is writing the index in "
                               f"{self.path.parent}; wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recorded_embedder(index_dir: Path) -> str | None:
    """The embedder spec an existing index was built with (from index.json), if any."""
    try:
        return json.loads((Path(index_dir) / META_FILE).read_text(encoding="utf-8"))["embedder_spec"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


class HybridIndex(Retriever):
    """Dense + BM25 retrieval over the chunk store, fused with reciprocal rank fusion."""

    def __init__(self, index_dir: Path, embedder: Embedder, store: ChunkStore) -> None:
        self.index_dir, self.embedder, self.store = index_dir, embedder, store
        self._lock = threading.RLock()
        self._dense = DenseIndex.load(index_dir / FAISS_FILE, embedder.dim) or DenseIndex(embedder.dim)
        self._bm25: BM25Index | None = BM25Index.load(index_dir / BM25_FILE)
        self._generation = -1
        self._dirty = False
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, index_dir: Path, embedder: Embedder, *, create: bool = True) -> HybridIndex:
        """Open (or create) the index in `index_dir`, checking it was built by `embedder`."""
        index_dir = Path(index_dir)
        if not (index_dir / DB_FILE).is_file():
            if not create:
                raise NotFoundError(f"no index in {index_dir}; run `ingest PATH...` first")
            index_dir.mkdir(parents=True, exist_ok=True)
        store = ChunkStore(index_dir / DB_FILE)
        try:
            meta = cls._check_embedder(store, embedder, index_dir)
            index = cls(index_dir, embedder, store)
            index._write_meta_file(meta)
            index.sync(persist=True)
        except BaseException:
            store.close()
            raise
        return index

    @staticmethod
    def _check_embedder(store: ChunkStore, embedder: Embedder, index_dir: Path) -> dict[str, str]:
        """Record the embedder on first use; raise IndexMismatchError when another one opens it."""
        meta = store.meta()
        if "embedder" not in meta:
            store.init_meta({"format": str(INDEX_FORMAT), "embedder": embedder.name,
                             "embedder_spec": embedder_spec(embedder), "dim": str(embedder.dim),
                             "created_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
            meta = store.meta()
        recorded, spec = meta["embedder"], meta.get("embedder_spec", meta["embedder"])
        if not same_embedder(recorded, embedder.name) or int(meta["dim"]) != embedder.dim:
            raise IndexMismatchError(
                f"the index in {index_dir} was built with embedder {recorded!r} (dim {meta['dim']})"
                f" but is being opened with {embedder.name!r} (dim {embedder.dim}); either pass "
                f"the original embedder (--embedder {spec}) or ingest into a new workspace "
                f"(--workspace NEW_DIR) to build a fresh index with the new one")
        return meta

    def _write_meta_file(self, meta: dict[str, str], extra: dict | None = None) -> None:
        data = {"format": int(meta.get("format", INDEX_FORMAT)), "embedder": meta["embedder"],
                "embedder_spec": meta.get("embedder_spec"), "dim": int(meta["dim"]),
                "created_at": meta.get("created_at")}
        for key in ("chunk_size", "chunk_overlap"):
            if key in meta:
                data[key] = int(meta[key])
        data.update(extra or {})
        path = self.index_dir / META_FILE
        try:
            if path.is_file() and json.loads(path.read_text(encoding="utf-8")) == data:
                return
        except ValueError:
            pass
        try:
            write_json_atomic(path, data)
        except OSError as err:  # a read-only index still serves searches
            log.warning("could not write %s: %s", self.index_dir / META_FILE, err)

    # -- keeping FAISS / BM25 in step with SQLite ----------------------------------------
    def sync(self, *, persist: bool = False) -> bool:
        """Reconcile FAISS/BM25 with the store; returns True when something had to be repaired."""
        with self._lock:
            generation = self.store.generation()
            ids = self.store.chunk_ids()
            have = self._dense.ids()
            extra, missing = np.setdiff1d(have, ids), np.setdiff1d(ids, have)
            if len(extra):
                self._dense.remove(extra)
            if len(missing):
                found, vectors = self.store.embeddings(missing, self.embedder.dim)
                self._dense.add(found, vectors)
            stale_bm25 = self._bm25 is None or not np.array_equal(self._bm25.ids, ids)
            if stale_bm25:
                self._bm25 = None
            changed = bool(len(extra) or len(missing) or stale_bm25)
            if changed and (len(ids) or len(have)):
                log.info("index %s: repaired from SQLite (%d vectors added, %d removed%s)",
                         self.index_dir, len(missing), len(extra),
                         ", BM25 rebuilt" if stale_bm25 else "")
            self._dirty = self._dirty or changed
            self._generation = generation
        if persist and self._dirty:
            try:
                self.persist()
            except OSError as err:
                log.warning("could not save the repaired index files: %s", err)
        return changed

    def refresh(self) -> bool:
        """Pick up changes another process committed since we last looked (cheap when none)."""
        if self.store.generation() == self._generation:
            return False
        return self.sync()

    def _bm25_index(self) -> BM25Index:
        with self._lock:
            if self._bm25 is None:
                ids, tokens = self.store.tokens()
                self._bm25 = BM25Index.build(ids, tokens)
            return self._bm25

    def persist(self, *, only_if_changed: bool = False) -> None:
        """Write FAISS and BM25 files atomically (after SQLite has committed)."""
        with self._lock:
            if only_if_changed and not self._dirty:
                return
            bm25 = self._bm25_index()
            self._dense.save(self.index_dir / FAISS_FILE)
            bm25.save(self.index_dir / BM25_FILE)
            self._dirty = False

    # -- writing (used by the ingest pipeline, under `writer()`) --------------------------
    def writer(self) -> WriterLock:
        """The exclusive writer lock; raises RagtuneError when another ingest holds it."""
        return WriterLock(self.index_dir / LOCK_FILE)

    def clean_stale_temp_files(self) -> int:
        """Delete temp files left by killed processes (their pid is gone); returns how many."""
        removed = 0
        for tmp in self.index_dir.glob("*.tmp-*"):
            pid = tmp.name.rsplit(".tmp-", 1)[1].split("-")[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)
                removed += 1
        return removed

    def set_ingest_settings(self, values: dict[str, int]) -> None:
        """Record the splitter settings of the latest ingest (in SQLite and index.json)."""
        self.store.set_meta({k: str(v) for k, v in values.items()})
        self._write_meta_file(self.store.meta())

    def write_document(self, record: DocumentRecord, chunks: list[NewChunk]) -> tuple[int, int]:
        """Replace a document's chunks (one transaction); returns (removed, added) counts.

        The commit happens under the index lock: a `search()` between the commit and the
        FAISS update would otherwise sync the new vectors from SQLite, and this write would
        then add them a second time (the same chunk twice in results and on disk).
        """
        with self._lock:
            removed, added = self.store.replace_document(record, chunks)
            self._dense.remove(removed)
            if added:
                self._dense.add(np.asarray(added, dtype=np.int64),
                                np.stack([c.embedding for c in chunks]))
            self._bm25, self._dirty = None, True
            self._generation = self.store.generation()
        return len(removed), len(added)

    def update_record(self, record: DocumentRecord) -> None:
        """Update a document's status/stat fields, keeping its chunks."""
        self.store.update_record(record)

    def remove_document(self, path: str, *, persist: bool = True) -> int:
        """Delete a document (by path or source) and its chunks; returns chunks removed."""
        with self._lock:  # commit and FAISS update as one step for searches (write_document)
            removed = self.store.delete_document(path)
            if removed is None:
                raise NotFoundError(f"no document {path!r} in the index {self.index_dir}")
            self._dense.remove(removed)
            self._bm25, self._dirty = None, True
            self._generation = self.store.generation()
        if persist:
            self.persist()
        return len(removed)

    def embeddings_for(self, hashes: list[str]) -> dict[str, np.ndarray]:
        """Stored vectors of chunks whose content hash is known (re-embedding is skipped)."""
        return {h: np.frombuffer(blob, dtype=np.float32)
                for h, blob in self.store.embeddings_by_hash(hashes).items()}

    # -- reading --------------------------------------------------------------------------
    def search(self, query: str, k: int = 5, mode: SearchMode = "hybrid") -> list[Hit]:
        """Up to k chunks, best first: cosine (dense), BM25 score (bm25) or RRF score (hybrid)."""
        if mode not in MODES:
            raise ConfigError("mode", mode, "expected one of hybrid, dense, bm25")
        if not isinstance(k, int) or k < 1:
            raise ConfigError("k", k, "must be a positive integer")
        if not query or not query.strip():
            raise ConfigError("query", query, "is empty")
        self.refresh()
        if mode == "dense":
            ranked = self._dense_search(query, k)
        elif mode == "bm25":
            ranked = self._bm25_index().search(query, k)
        else:
            n = max(HYBRID_CANDIDATES, 4 * k)
            keyword = [i for i, _ in self._bm25_index().search(query, n)]
            dense = [i for i, _ in self._dense_search(query, n)] if self.reads(query) else []
            ranked = reciprocal_rank_fusion([dense, keyword])[:k]
        chunks = self.store.chunks_by_ids([i for i, _ in ranked])
        return [Hit(chunks[i], score) for i, score in ranked if i in chunks]

    def reads(self, query: str) -> bool:
        """Whether the embedder's dense ranking takes part for this query.

        Only an English-only embedder sits out, and only for Chinese queries: all-MiniLM-L6-v2's
        ranking of a Chinese query is noise that drags the fusion down (hit@5 on the shipped Chinese
        questions: 0.81 fused vs 1.00 BM25 alone), so hybrid search ranks such queries by BM25 alone.
        "English-only" means the languages the embedder declares (setting `embedder_languages`, else
        its model card's `language:`, else `retrieval.embedders.KNOWN_LANGUAGES`) are English alone;
        a multilingual or Chinese embedder (bge-m3, bge-small-zh, multilingual-e5), or one that
        declares nothing, always takes part.
        """
        return not (english_only(getattr(self.embedder, "languages", None)) and is_chinese(query))

    def _query_vector(self, query: str) -> np.ndarray:
        """The query's embedding, from a small LRU cache (eval and A/B runs repeat questions)."""
        with self._lock:
            cached = self._query_cache.get(query)
            if cached is not None:
                self._query_cache.move_to_end(query)
                return cached
        embed_query = getattr(self.embedder, "embed_query", None)  # with the model's query prompt
        vector = embed_query(query) if embed_query else self.embedder.embed([query])[0]
        with self._lock:
            self._query_cache[query] = vector
            while len(self._query_cache) > QUERY_CACHE_SIZE:
                self._query_cache.popitem(last=False)
        return vector

    def _dense_search(self, query: str, k: int) -> list[tuple[int, float]]:
        if len(self._dense) == 0:
            return []
        vector = self._query_vector(query)
        with self._lock:
            return self._dense.search(vector, k)

    def chunks(self, source: str | None = None) -> list[Chunk]:
        """All chunks, or one document's (by path or source), in document/position order."""
        return self.store.chunks(source)

    def documents(self) -> list[DocumentRecord]:
        """Every document the index knows, failed ones included (see `status`/`error`)."""
        return self.store.documents()

    def document(self, path: str) -> DocumentRecord | None:
        return self.store.document(path)

    def stats(self) -> dict:
        """Counts and identity, for `ragtune` status output and the API."""
        docs = self.documents()
        by_status: dict[str, int] = {}
        for doc in docs:
            by_status[doc.status] = by_status.get(doc.status, 0) + 1
        files = [self.index_dir / name for name in (DB_FILE, FAISS_FILE, BM25_FILE)]
        return {"index_dir": str(self.index_dir), "embedder": self.embedder.name,
                "dim": self.embedder.dim, "documents": len(docs), "by_status": by_status,
                "chunks": self.store.count_chunks(), "vectors": len(self._dense),
                "generation": self.store.generation(),
                "bytes": sum(f.stat().st_size for f in files if f.is_file())}

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> HybridIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_index(settings: Settings, embedder: Embedder | None = None, *,
               create: bool = True, batch_size: int = 64) -> HybridIndex:
    """Open the workspace's index, loading `settings.embedder` when no embedder is given.

    When the embedder was not set explicitly (flag, env or YAML) and an index exists, the
    embedder recorded in the index is used, so `ragtune search` works after
    `ingest --embedder X` without repeating the flag. `batch_size`: texts per model call.
    """
    from retrieval.embedders import load_embedder

    index_dir = settings.paths.index_dir
    if embedder is None:
        spec = settings.embedder
        if "embedder" not in settings.model_fields_set:
            spec = recorded_embedder(index_dir) or spec
        if not create and not (index_dir / DB_FILE).is_file():
            raise NotFoundError(f"no index in {index_dir}; run `ingest PATH...` first")
        embedder = load_embedder(spec, device=settings.device, batch_size=batch_size,
                                 query_prompt=settings.embedder_query_prompt,
                                 passage_prompt=settings.embedder_passage_prompt,
                                 languages=settings.embedder_languages)
    return HybridIndex.open(index_dir, embedder, create=create)
