"""An index built from the small corpus with the counting hash embedder (real SQLite + FAISS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.pipeline import IngestConfig, run_ingest
from retrieval.index import HybridIndex
from tests.retrieval.corpus import CountingEmbedder, write_corpus


@pytest.fixture()
def emb() -> CountingEmbedder:
    return CountingEmbedder()


@pytest.fixture()
def index_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emb: CountingEmbedder) -> Path:
    """An index directory holding the ingested corpus (sources are docs/...)."""
    monkeypatch.chdir(tmp_path)
    corpus = write_corpus(tmp_path / "docs")
    index_dir = tmp_path / "index"
    with HybridIndex.open(index_dir, emb) as index:
        run_ingest(IngestConfig([corpus], chunk_size=200, chunk_overlap=20), index,
                   progress=False)
    emb.reset()
    return index_dir


@pytest.fixture()
def index(index_dir: Path, emb: CountingEmbedder):
    with HybridIndex.open(index_dir, emb) as idx:
        yield idx
