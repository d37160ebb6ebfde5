"""HybridIndex: ranking per mode (incl. Chinese via jieba), reads, removal, mismatch, repair."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ingest.pipeline import IngestConfig, run_ingest
from ragtune.errors import ConfigError, IndexMismatchError, NotFoundError, RagtuneError
from tests.fakes import HashEmbedder
from ragtune.settings import load_settings
from retrieval.index import BM25_FILE, FAISS_FILE, META_FILE, HybridIndex, open_index
from tests.retrieval.corpus import DOCS, CountingEmbedder, write_corpus


@pytest.mark.parametrize(("mode", "query", "source"), [
    ("dense", "fire drills assembly point", "docs/safety/fire.md"),
    ("dense", "tubing cartridge replacement TW40", "docs/products/tw40.txt"),
    ("bm25", "tubing cartridge", "docs/products/tw40.txt"),
    ("bm25", "authenticator app codes", "docs/it/vpn.html"),
    ("bm25", "年假申请", "docs/zh/handbook.md"),
    ("bm25", "访客网络的密码多久更换", "docs/zh/security.txt"),
    ("hybrid", "VPN multi-factor authenticator", "docs/it/vpn.html"),
    ("hybrid", "doctor's note sick leave", "docs/hr/leave.md"),
    ("hybrid", "差旅报销发票", "docs/zh/handbook.md"),
])
def test_top_hit_per_mode(index, mode, query, source):
    hits = index.search(query, k=3, mode=mode)
    assert hits and hits[0].chunk.source == source
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_hybrid_fuses_both_rankings(index):
    query = "annual leave days booked in the staff portal"
    dense = [h.chunk.id for h in index.search(query, k=40, mode="dense")]
    bm25 = [h.chunk.id for h in index.search(query, k=40, mode="bm25")]
    hybrid = index.search(query, k=5)
    assert len(hybrid) == 5
    for hit in hybrid:
        ranks = [r.index(hit.chunk.id) + 1 for r in (dense, bm25) if hit.chunk.id in r]
        assert hit.score == pytest.approx(sum(1 / (60 + r) for r in ranks))


def test_bm25_finds_nothing_for_unknown_words(index):
    assert index.search("zyzzyva quux", mode="bm25") == []


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"mode": "sparse"}, "mode"), ({"k": 0}, "k"), ({"query": "  "}, "query")])
def test_bad_search_arguments(index, kwargs, field):
    with pytest.raises(ConfigError) as err:
        index.search(**{"query": "leave", **kwargs})
    assert err.value.field == field


def test_chunks_and_documents(index):
    chunks = index.chunks()
    keys = [(c.source, c.position) for c in chunks]
    assert keys == sorted(keys)
    assert {c.source for c in chunks} == {f"docs/{rel}" for rel in DOCS}
    one = index.chunks("docs/hr/leave.md")
    assert one and [c.position for c in one] == list(range(len(one)))
    assert index.chunks(str(Path("docs/hr/leave.md").resolve())) == one
    docs = index.documents()
    assert [d.source for d in docs] == sorted(f"docs/{rel}" for rel in DOCS)
    assert all(d.status == "ok" and d.sha256 and d.chunks > 0 for d in docs)
    assert sum(d.chunks for d in docs) == len(chunks)
    stats = index.stats()
    assert stats["chunks"] == stats["vectors"] == len(chunks)
    assert stats["documents"] == len(DOCS) and stats["by_status"] == {"ok": len(DOCS)}


def test_remove_document(index, index_dir, emb):
    n = len(index.chunks("docs/safety/fire.md"))
    assert index.remove_document("docs/safety/fire.md") == n > 0
    assert all(h.chunk.source != "docs/safety/fire.md" for h in index.search("fire drills", k=20))
    with pytest.raises(NotFoundError):
        index.remove_document("docs/safety/fire.md")
    with HybridIndex.open(index_dir, emb) as again:  # the removal was persisted
        assert again.stats()["vectors"] == again.stats()["chunks"] == len(index.chunks())


def test_other_embedder_is_refused(index_dir):
    with pytest.raises(IndexMismatchError) as err:
        HybridIndex.open(index_dir, HashEmbedder(dim=64, salt="other"))
    msg = str(err.value)
    assert "import:tests.fakes:HashEmbedder?dim=64" in msg and "import:tests.fakes:HashEmbedder?dim=64&salt=other" in msg and "--workspace" in msg
    with pytest.raises(IndexMismatchError):
        HybridIndex.open(index_dir, HashEmbedder(dim=32))


def test_meta_file_records_the_embedder(index_dir):
    import json

    meta = json.loads((index_dir / META_FILE).read_text())
    assert meta["embedder"] == "import:tests.fakes:HashEmbedder?dim=64" and meta["dim"] == 64
    assert meta["chunk_size"] == 200 and meta["chunk_overlap"] == 20


def test_missing_and_corrupt_files_are_rebuilt_from_sqlite_without_the_model(index_dir, emb):
    with HybridIndex.open(index_dir, emb) as index:
        expected = [(h.chunk.id, h.score) for h in index.search("leave portal", k=5)]
    (index_dir / FAISS_FILE).unlink()
    (index_dir / BM25_FILE).write_bytes(b"garbage")
    emb.reset()
    with HybridIndex.open(index_dir, emb) as index:
        assert emb.calls == 0
        assert index.stats()["vectors"] == index.stats()["chunks"]
        assert [(h.chunk.id, h.score) for h in index.search("leave portal", k=5)] == expected
    assert (index_dir / FAISS_FILE).is_file()


def test_stale_faiss_file_is_reconciled(index_dir, emb, tmp_path):
    stale = tmp_path / "stale.faiss"
    shutil.copy(index_dir / FAISS_FILE, stale)
    extra = write_corpus(tmp_path / "more", {"canteen.md": "# Canteen\nThe canteen serves "
                                                           "porridge from 07:30."})
    with HybridIndex.open(index_dir, emb) as index:
        index.remove_document("docs/hr/leave.md")
        run_ingest(IngestConfig([extra], chunk_size=200, chunk_overlap=20), index, progress=False)
    shutil.copy(stale, index_dir / FAISS_FILE)  # as if the process died before saving FAISS
    shutil.copy(stale, index_dir / BM25_FILE)
    with HybridIndex.open(index_dir, emb) as index:
        assert np.array_equal(index._dense.ids(), index.store.chunk_ids())
        assert index.search("porridge canteen", k=1, mode="dense")[0].chunk.source == \
            "more/canteen.md"
        assert all(h.chunk.source != "docs/hr/leave.md" for h in index.search("leave", k=50))


def test_reader_picks_up_changes_committed_by_a_writer(index_dir, emb, tmp_path):
    extra = write_corpus(tmp_path / "more", {"parking.md": "# Parking\nVisitor parking bays "
                                                          "are marked in yellow."})
    with HybridIndex.open(index_dir, emb) as reader, HybridIndex.open(index_dir, emb) as writer:
        assert reader.search("yellow parking bays", mode="bm25") == []
        run_ingest(IngestConfig([extra], chunk_size=200, chunk_overlap=20), writer,
                   progress=False)
        hits = reader.search("yellow parking bays", k=1)
        assert hits[0].chunk.source == "more/parking.md"


def test_one_writer_at_a_time(index):
    with index.writer():
        with pytest.raises(RagtuneError, match="another ingest"):
            with index.writer():
                pass
    with index.writer():  # released
        pass


def test_empty_index(tmp_path):
    with HybridIndex.open(tmp_path / "empty", CountingEmbedder()) as index:
        assert index.search("anything") == [] and index.chunks() == []
        assert index.stats()["chunks"] == 0


def test_open_index_uses_the_recorded_embedder(index_dir, monkeypatch, tmp_path):
    workspace = index_dir.parent
    settings = load_settings(workspace=workspace)
    assert "embedder" not in settings.model_fields_set
    with open_index(settings) as index:  # default embedder is MiniLM; the index says import:tests.fakes:HashEmbedder?dim=64
        assert index.embedder.name == "import:tests.fakes:HashEmbedder?dim=64"
    with pytest.raises(NotFoundError):
        open_index(load_settings(workspace=tmp_path / "nowhere"), create=False)
    with pytest.raises(IndexMismatchError):
        open_index(load_settings(workspace=workspace, embedder="import:tests.fakes:HashEmbedder?dim=16"))


def test_english_only_embedder_leaves_chinese_queries_to_bm25(index_dir):
    english = CountingEmbedder()
    english.languages = frozenset({"en"})
    with HybridIndex.open(index_dir, english) as index:
        english.reset()
        hybrid = index.search("访客网络的密码多久更换", k=3)
        assert english.calls == 0  # the dense ranking of a Chinese query is skipped
        bm25 = index.search("访客网络的密码多久更换", k=3, mode="bm25")
        assert [h.chunk.id for h in hybrid] == [h.chunk.id for h in bm25]
        assert hybrid[0].chunk.source == "docs/zh/security.txt"
        index.search("fire drills", k=3)
        assert english.calls == 1  # English queries still use both rankings


def test_repeated_queries_reuse_the_query_vector(index, emb):
    first = index.search("fire drills assembly point", k=3)
    calls = emb.calls
    assert index.search("fire drills assembly point", k=3) == first
    assert index.search("fire drills assembly point", k=3, mode="dense")
    assert emb.calls == calls
