"""The ingest pipeline on real files, SQLite and FAISS: incremental runs, duplicates, bad files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ingest.commands import ingest
from ingest.pipeline import IngestConfig, ingest_documents
from ragtune.errors import ConfigError, IndexMismatchError
from ragtune.settings import load_settings
from retrieval.index import open_index
from tests.retrieval.corpus import DOCS, CountingEmbedder, write_corpus


@pytest.fixture()
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return write_corpus(tmp_path / "docs")


@pytest.fixture()
def settings(workspace: Path):
    return load_settings(workspace=workspace, chunk_size=200, chunk_overlap=20)


@pytest.fixture()
def emb() -> CountingEmbedder:
    return CountingEmbedder()


def run(corpus: Path, settings, emb, **kwargs):
    emb.reset()
    return ingest_documents([corpus], settings, embedder=emb, progress=False, **kwargs)


def index_state(settings, emb) -> tuple[list, list]:
    """(chunks as tuples, documents as (source, status, chunks)) read back from a fresh open."""
    with open_index(settings, emb) as index:
        dense_ids = index._dense.ids()
        assert np.array_equal(dense_ids, index.store.chunk_ids()), "FAISS out of step with SQLite"
        chunks = [(c.source, c.position, c.section, c.text) for c in index.chunks()]
        docs = [(d.source, d.status, d.chunks) for d in index.documents()]
    return chunks, docs


def assert_no_duplicates(chunks: list) -> None:
    assert len({(c[0], c[1]) for c in chunks}) == len(chunks)
    assert len({(c[0], c[2], c[3]) for c in chunks}) == len(chunks)


def test_second_run_of_unchanged_folder_embeds_nothing(corpus, settings, emb):
    first = run(corpus, settings, emb)
    assert sorted(first.added) == sorted(f"docs/{rel}" for rel in DOCS)
    assert first.failed == [] and first.exit_code == 0
    assert first.embedded == len(emb.texts) == first.chunks_total > len(DOCS)
    second = run(corpus, settings, emb)
    assert emb.calls == 0
    assert len(second.unchanged) == len(DOCS) and not (second.added or second.updated)
    assert second.chunks_total == first.chunks_total
    assert "nothing needed embedding" in second.summary()
    # touching a file (new mtime, same bytes) is still "unchanged": the sha256 matches
    os.utime(corpus / "hr/leave.md", ns=(1, 1))
    third = run(corpus, settings, emb)
    assert emb.calls == 0 and "docs/hr/leave.md" in third.unchanged


def test_changed_file_replaces_its_chunks_reusing_unchanged_texts(corpus, settings, emb):
    run(corpus, settings, emb)
    before, _ = index_state(settings, emb)
    leave_before = [c for c in before if c[0] == "docs/hr/leave.md"]
    path = corpus / "hr/leave.md"
    path.write_text(path.read_text().replace("27 days", "31 days"), encoding="utf-8")
    report = run(corpus, settings, emb)
    assert report.updated == ["docs/hr/leave.md"] and len(report.unchanged) == len(DOCS) - 1
    assert 0 < report.embedded < len(leave_before)  # only the edited chunk is embedded again
    assert report.reused == len(leave_before) - report.embedded
    after, _ = index_state(settings, emb)
    assert_no_duplicates(after)
    texts = " ".join(c[3] for c in after if c[0] == "docs/hr/leave.md")
    assert "31 days" in texts and "27 days" not in texts
    assert [c for c in after if c[0] != "docs/hr/leave.md"] == \
        [c for c in before if c[0] != "docs/hr/leave.md"]


def test_deleted_file_loses_its_chunks_unless_keep_missing(corpus, settings, emb):
    run(corpus, settings, emb)
    (corpus / "safety/fire.md").unlink()
    kept = run(corpus, settings, emb, keep_missing=True)
    assert kept.removed == [] and emb.calls == 0
    chunks, _ = index_state(settings, emb)
    assert any(c[0] == "docs/safety/fire.md" for c in chunks)
    removed = run(corpus, settings, emb)
    assert removed.removed == ["docs/safety/fire.md"] and removed.chunks_removed > 0
    chunks, docs = index_state(settings, emb)
    assert not any(c[0] == "docs/safety/fire.md" for c in chunks)
    assert "docs/safety/fire.md" not in [d[0] for d in docs]
    with open_index(settings, emb) as index:
        assert all(h.chunk.source != "docs/safety/fire.md"
                   for h in index.search("fire drills assembly point", k=10, mode="bm25"))


def test_ingesting_one_folder_does_not_remove_documents_of_another(corpus, settings, emb, tmp_path):
    other = write_corpus(tmp_path / "other", {"notes.md": "# Notes\nThe canteen opens at 8."})
    run(corpus, settings, emb)
    ingest_documents([other], settings, embedder=emb, progress=False)
    report = run(corpus, settings, emb)
    assert report.removed == []
    _, docs = index_state(settings, emb)
    assert "other/notes.md" in [d[0] for d in docs]


def test_renamed_file_reuses_stored_vectors(corpus, settings, emb):
    run(corpus, settings, emb)
    shutil.move(corpus / "products/tw40.txt", corpus / "products/tidewell-tw40.txt")
    report = run(corpus, settings, emb)
    assert report.removed == ["docs/products/tw40.txt"]
    assert report.added == ["docs/products/tidewell-tw40.txt"]
    assert report.embedded == 0 and emb.calls == 0 and report.reused > 0


def test_copy_of_an_indexed_file_is_not_indexed_twice(corpus, settings, emb):
    run(corpus, settings, emb)
    shutil.copy(corpus / "hr/leave.md", corpus / "hr/leave-copy.md")
    report = run(corpus, settings, emb)
    assert report.duplicates == ["docs/hr/leave-copy.md"] and report.chunks_added == 0
    chunks, docs = index_state(settings, emb)
    assert_no_duplicates(chunks)
    assert ("docs/hr/leave-copy.md", "duplicate", 0) in docs
    # once the original is gone, the copy takes over (reusing the stored vectors)
    (corpus / "hr/leave.md").unlink()
    report = run(corpus, settings, emb)
    assert report.removed == ["docs/hr/leave.md"] and report.added == ["docs/hr/leave-copy.md"]
    assert report.embedded == 0
    chunks, _ = index_state(settings, emb)
    assert any(c[0] == "docs/hr/leave-copy.md" for c in chunks)


def test_repeated_paragraphs_within_a_file_are_stored_once(corpus, settings, emb):
    para = "Visitors sign in at reception and wear a badge at all times on site.\n\n"
    (corpus / "visitors.txt").write_text(para * 6, encoding="utf-8")
    run(corpus, settings, emb)
    chunks, _ = index_state(settings, emb)
    assert_no_duplicates(chunks)
    assert 1 <= len([c for c in chunks if c[0] == "docs/visitors.txt"]) <= 2


def test_bad_files_are_reported_and_indexed_documents_survive(corpus, workspace, capsys):
    assert ingest([corpus], workspace=workspace, embedder="import:tests.fakes:HashEmbedder?dim=64", chunk_size=200,
                  chunk_overlap=20, pairs="none") == 0
    capsys.readouterr()
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (corpus / "corrupt.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    (corpus / "broken.docx").write_bytes(b"PK\x03\x04 not a zip")
    (corpus / "products/tw40.txt").write_bytes(b"\x00\x01\x02\xff" * 100)  # was good before
    code = ingest([corpus], workspace=workspace, chunk_size=200, chunk_overlap=20, pairs="none")
    out = capsys.readouterr().out
    assert code == 1
    failed_lines = [line for line in out.splitlines() if line.startswith("FAILED ")]
    assert sorted(line.split(":")[0] for line in failed_lines) == sorted(
        f"FAILED docs/{name}" for name in
        ("broken.docx", "binary.txt", "corrupt.pdf", "empty.txt", "products/tw40.txt"))
    summary = [line for line in out.splitlines() if line.startswith("ingest:")]
    assert len(summary) == 1 and "5 failed" in summary[0]
    settings = load_settings(workspace=workspace)
    with open_index(settings) as index:
        docs = {d.source: d for d in index.documents()}
        assert docs["docs/products/tw40.txt"].status == "error"
        assert docs["docs/products/tw40.txt"].error
        assert index.chunks("docs/products/tw40.txt"), "old chunks of a now-broken file were lost"
        assert {d.source for d in docs.values() if d.status == "ok"} == \
            {f"docs/{rel}" for rel in DOCS if rel != "products/tw40.txt"}
    # fixing the file brings it back as an update
    (corpus / "products/tw40.txt").write_text(DOCS["products/tw40.txt"], encoding="utf-8")
    for name in ("empty.txt", "binary.txt", "corrupt.pdf", "broken.docx"):
        (corpus / name).unlink()
    assert ingest([corpus], workspace=workspace, chunk_size=200, chunk_overlap=20,
                  pairs="none") == 0


def test_changing_chunk_settings_resplits_every_document(corpus, settings, emb, workspace):
    run(corpus, settings, emb)
    smaller = load_settings(workspace=workspace, chunk_size=120, chunk_overlap=10)
    report = run(corpus, smaller, emb)
    assert len(report.updated) == len(DOCS) and report.embedded > 0
    chunks, _ = index_state(smaller, emb)
    assert_no_duplicates(chunks)
    assert max(len(c[3]) for c in chunks) <= 120


def test_other_embedder_is_a_clear_error(corpus, workspace):
    assert ingest([corpus], workspace=workspace, embedder="import:tests.fakes:HashEmbedder?dim=64", pairs="none") == 0
    with pytest.raises(IndexMismatchError) as err:
        ingest([corpus], workspace=workspace, embedder="import:tests.fakes:HashEmbedder?dim=32", pairs="none")
    message = str(err.value)
    assert "import:tests.fakes:HashEmbedder?dim=64" in message and "import:tests.fakes:HashEmbedder?dim=32" in message
    assert "--embedder import:tests.fakes:HashEmbedder?dim=64" in message and "--workspace" in message


@pytest.mark.parametrize(("field", "kwargs"), [
    ("paths", {"paths": []}),
    ("batch_size", {"batch_size": 0}),
    ("chunk_overlap", {"chunk_size": 100, "chunk_overlap": 100}),
    ("max_file_mb", {"max_file_mb": 0}),
])
def test_config_errors_name_the_flag(field, kwargs):
    with pytest.raises(ConfigError) as err:
        IngestConfig(**{"paths": [Path("docs")], **kwargs})
    assert err.value.field == field


def test_command_rejects_bad_overlap_with_config_error(corpus, workspace):
    with pytest.raises(ConfigError) as err:
        ingest([corpus], workspace=workspace, chunk_size=100, chunk_overlap=150,
               embedder="import:tests.fakes:HashEmbedder?dim=64")
    assert err.value.field == "chunk_overlap"


@pytest.mark.integration
def test_real_minilm_ingest_and_search(corpus, workspace, embedded_embedder_dir):
    from retrieval.embedders import load_embedder

    real = load_embedder(str(embedded_embedder_dir))
    settings = load_settings(workspace=workspace)
    first = ingest_documents([corpus], settings, embedder=real, progress=False)
    assert first.embedded == first.chunks_total and real.calls > 0
    with open_index(settings, real) as index:
        top = index.search("How many days of annual leave do employees get?", k=3, mode="dense")
        assert top[0].chunk.source == "docs/hr/leave.md"
        hybrid = index.search("What do I do when the fire alarm sounds?", k=3)
        assert hybrid[0].chunk.source == "docs/safety/fire.md"
    calls = real.calls
    again = ingest_documents([corpus], settings, embedder=real, progress=False)
    assert real.calls == calls and again.embedded == 0


def test_a_newer_loader_rereads_every_document(corpus, settings, emb, monkeypatch):
    from ingest import loaders

    run(corpus, settings, emb)
    assert not run(corpus, settings, emb).updated  # nothing changed: nothing re-read
    monkeypatch.setattr(loaders, "LOADER_VERSION", loaders.LOADER_VERSION + 1)
    report = run(corpus, settings, emb)
    assert len(report.updated) == len(DOCS)
    chunks, _ = index_state(settings, emb)
    assert_no_duplicates(chunks)
