"""A search that runs while a document is written sees it once or not at all (real threads).

The interleaving is forced, not hoped for: the write pauses right after SQLite committed
(a hook around the store's `replace_document`) until the search has either finished or is
waiting for the index lock (an instrumented lock reports a contended acquire).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from retrieval.bm25 import tokenize
from retrieval.index import FAISS_FILE, HybridIndex
from retrieval.store import DocumentRecord, NewChunk
from tests.fakes import HashEmbedder

TEXTS = ["Employees get 25 days of annual leave.", "Annual leave is booked in the portal."]
WAIT = 60  # seconds: only reached when the code under test deadlocks


class ReportingLock:
    """A real re-entrant lock that sets `contended` when a thread has to wait for it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.contended = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        self.contended.set()
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


def new_chunks(emb: HashEmbedder) -> list[NewChunk]:
    vectors = emb.embed(TEXTS)
    return [NewChunk(i, "Leave", t, f"h{i}", tokenize(t), v)
            for i, (t, v) in enumerate(zip(TEXTS, vectors, strict=True))]


def test_search_during_a_write_never_duplicates_chunks(tmp_path: Path, monkeypatch) -> None:
    emb = HashEmbedder(64)
    index = HybridIndex.open(tmp_path / "index", emb)
    lock = index._lock = ReportingLock()
    committed, resume, progress = threading.Event(), threading.Event(), threading.Event()
    replace = index.store.replace_document

    def replace_then_pause(record, chunks):
        out = replace(record, chunks)  # SQLite has committed the new chunks
        committed.set()
        assert resume.wait(WAIT)
        return out

    monkeypatch.setattr(index.store, "replace_document", replace_then_pause)
    record = DocumentRecord(str(tmp_path / "leave.md"), "leave.md", "sha", 1, 1, "ok", None, 2)
    writer = threading.Thread(target=index.write_document, args=(record, new_chunks(emb)))
    hits: list = []

    def search() -> None:
        hits.extend(index.search("annual leave", k=5))
        progress.set()

    writer.start()
    assert committed.wait(WAIT)
    reader = threading.Thread(target=search)
    reader.start()
    watcher = threading.Thread(target=lambda: lock.contended.wait(WAIT) and progress.set())
    watcher.daemon = True
    watcher.start()
    assert progress.wait(WAIT)  # the search finished in the gap, or waits for the writer
    resume.set()
    writer.join(WAIT)
    reader.join(WAIT)

    ids = index.store.chunk_ids()
    assert len(ids) == 2
    assert sorted(index._dense.ids().tolist()) == sorted(ids.tolist()), "a vector added twice"
    assert len({h.chunk.id for h in hits}) == len(hits)
    assert len(index.search("annual leave", k=5)) == 2
    index.persist()
    index.close()
    with HybridIndex.open(tmp_path / "index", emb) as again:
        on_disk = again._dense.ids()
        assert (tmp_path / "index" / FAISS_FILE).is_file()
        assert np.array_equal(np.sort(on_disk), np.sort(ids)) and len(on_disk) == 2
    lock.contended.set()  # let the watcher thread end
