"""SIGKILL an ingest (in a subprocess) at several moments, then check and finish the work.

After each kill the previous index must open, be consistent (FAISS and BM25 agree with SQLite,
every document's chunks complete) and searchable; a rerun must end in exactly the state a clean
ingest of the same files produces.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ingest.pipeline import embed_text, ingest_documents
from tests.fakes import HashEmbedder
from ragtune.settings import load_settings
from retrieval.index import HybridIndex
from retrieval.store import ChunkStore
from tests.retrieval.corpus import DOCS, write_corpus

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("crash_runner.py")
EXTRA = {
    "ops/shipping.md": "# Shipping\n\n## Couriers\nParcels leave the loading dock at 16:00 daily. "
                       "Fragile instruments travel in foam-lined crates.",
    "ops/canteen.txt": "The canteen serves breakfast from 07:30 and lunch from 12:00 to 14:00.",
    "it/printers.md": "# Printers\n\n## Toner\nOrder toner through the service desk; never "
                      "refill cartridges yourself.",
}
# English only: a Chinese file would make every subprocess load jieba's dictionary (slow), and
# Chinese tokenising is tested elsewhere; crash safety does not depend on the language.
BASE = {rel: text for rel, text in DOCS.items() if not rel.startswith("zh/")}


def change_corpus(root: Path) -> None:
    """Version 2 of the corpus: one file edited, one deleted, three added."""
    leave = root / "hr/leave.md"
    leave.write_text(leave.read_text().replace("27 days", "29 days"), encoding="utf-8")
    (root / "safety/fire.md").unlink()
    write_corpus(root, EXTRA)


def ingest_in_subprocess(cwd: Path, workspace: Path, crash_at: str | None) -> int:
    """Run the ingest in a subprocess (through `crash_runner`) that kills itself at `crash_at`."""
    env = {**os.environ, "RAGTUNE_WORKSPACE": str(workspace), "PYTHONPATH": str(REPO)}
    args = {"paths": ["docs"], "embedder": "import:tests.fakes:HashEmbedder?dim=64",
            "chunk_size": 200, "chunk_overlap": 20, "pairs": "none"}
    proc = subprocess.run([sys.executable, str(RUNNER), crash_at or "", json.dumps(args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-2000:]
    return proc.returncode


def snapshot(workspace: Path) -> dict:
    """The index as data, after checking it is internally consistent."""
    emb = HashEmbedder(dim=64)
    with HybridIndex.open(workspace / "index", emb) as index:
        ids = index.store.chunk_ids()
        assert np.array_equal(index._dense.ids(), ids), "FAISS ids differ from SQLite"
        assert np.array_equal(index._bm25_index().ids, ids), "BM25 ids differ from SQLite"
        chunks = index.chunks()
        for chunk in chunks:
            expected = emb.embed([embed_text(chunk)])[0]
            assert np.allclose(index._dense._index.reconstruct(chunk.id), expected)
        docs = index.documents()
        for doc in docs:
            positions = [c.position for c in chunks if c.source == doc.source]
            assert positions == list(range(doc.chunks)), f"{doc.source}: incomplete chunks"
        hits = [h.chunk.source for h in index.search("annual leave", k=3)]
        assert hits, "index not searchable"
    return {"docs": [(d.source, d.status, d.chunks, d.sha256) for d in docs],
            "chunks": [(c.source, c.position, c.section, c.text) for c in chunks]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, dict]:
    """Snapshots of a clean ingest of version 1 and of version 2 of the corpus."""
    root = tmp_path_factory.mktemp("reference")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        write_corpus(root / "docs", BASE)
        settings = load_settings(workspace=root / "ws1", chunk_size=200, chunk_overlap=20)
        ingest_documents([Path("docs")], settings, embedder=HashEmbedder(64), progress=False)
        v1 = snapshot(root / "ws1")
        change_corpus(root / "docs")
        settings = load_settings(workspace=root / "ws2", chunk_size=200, chunk_overlap=20)
        ingest_documents([Path("docs")], settings, embedder=HashEmbedder(64), progress=False)
        v2 = snapshot(root / "ws2")
    finally:
        os.chdir(cwd)
    return v1, v2


@pytest.mark.parametrize("crash_at", [
    "store.before_commit:2", "pipeline.after_commit:1", "pipeline.after_removals",
    "pipeline.before_persist", "faiss.tmp_written"])
def test_kill_during_update_then_rerun(tmp_path, monkeypatch, reference, crash_at):
    v1, v2 = reference
    monkeypatch.chdir(tmp_path)
    write_corpus(tmp_path / "docs", BASE)
    workspace = tmp_path / "ws"
    settings = load_settings(workspace=workspace, chunk_size=200, chunk_overlap=20)
    ingest_documents([Path("docs")], settings, embedder=HashEmbedder(64), progress=False)
    assert snapshot(workspace) == v1
    change_corpus(tmp_path / "docs")

    assert ingest_in_subprocess(tmp_path, workspace, crash_at) == -signal.SIGKILL
    after_crash = snapshot(workspace)  # consistent and searchable
    untouched = {s for s, *_ in v1["docs"]} - {"docs/hr/leave.md", "docs/safety/fire.md"}
    assert [c for c in after_crash["chunks"] if c[0] in untouched] == \
        [c for c in v1["chunks"] if c[0] in untouched], "documents not being changed were hurt"

    assert ingest_in_subprocess(tmp_path, workspace, None) == 0
    assert snapshot(workspace) == v2
    assert not list((workspace / "index").glob("*.tmp-*"))


def test_kill_during_first_ingest_then_rerun(tmp_path, monkeypatch, reference):
    _, v2 = reference
    monkeypatch.chdir(tmp_path)
    write_corpus(tmp_path / "docs", BASE)
    change_corpus(tmp_path / "docs")
    workspace = tmp_path / "ws"
    assert ingest_in_subprocess(tmp_path, workspace, "store.before_commit:3") == -signal.SIGKILL
    store = ChunkStore(workspace / "index" / "chunks.sqlite")
    assert len(store.documents()) == 2  # two documents committed, the third rolled back
    store.close()
    snapshot(workspace)
    assert ingest_in_subprocess(tmp_path, workspace, None) == 0
    assert snapshot(workspace) == v2
    assert len(BASE) + len(EXTRA) - 1 == len(v2["docs"])
