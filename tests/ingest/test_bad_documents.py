"""Each bad real-world document is one named failure line; the rest is ingested and nothing indexed is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.commands import ingest
from ragtune.settings import load_settings
from retrieval.index import open_index
from tests.fakes import HashEmbedder
from tests.ingest.scans import image_pdf, render_lines

EMBEDDER = "import:tests.fakes:HashEmbedder?dim=64"


def write_bad_corpus(docs: Path) -> dict[str, str]:
    """Good files plus one file per bad case; returns the bad file names and a fragment of each reason."""
    from PIL import Image

    docs.mkdir(parents=True)
    (docs / "good.md").write_text("# Leave\n\nAnnual leave is 27 days for every Lumenhollow employee.\n",
                                  encoding="utf-8")
    render_lines(["Tidewell TW-40 warranty three years"]).save(docs / "notice.png")
    Image.new("RGB", (300, 200), "white").save(docs / "blank.png")
    image_pdf(docs / "long-scan.pdf", [["page one"], ["page two"], ["page three"]])
    links = "".join(f"<li><a href='/{i}'>Chapter {i}</a></li>" for i in range(20))
    (docs / "menu.html").write_text(f"<nav><ul>{links}</ul></nav>", encoding="utf-8")
    (docs / "deep.html").write_text("<div>" * 200_000 + "x" + "</div>" * 200_000, encoding="utf-8")
    (docs / "big.csv").write_text("sku,name\n" + "".join(f"{i},n{i}\n" for i in range(500)), encoding="utf-8")
    (docs / "bad.jsonl").write_text('{"q": "ok"}\n{"q": oops}\n', encoding="utf-8")
    (docs / "new\nline.txt").write_text("A file whose name holds a newline.", encoding="utf-8")
    return {"blank.png": "no text found by OCR", "long-scan.pdf": "RAGTUNE_OCR_MAX_PAGES",
            "menu.html": "only navigation", "deep.html": "RAGTUNE_MAX_HTML_DEPTH",
            "big.csv": "row 202: more than 200 records", "bad.jsonl": "row 2: invalid JSON"}


def test_bad_documents_fail_one_line_each_and_the_rest_is_ingested(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGTUNE_OCR_MAX_PAGES", "2")
    monkeypatch.setenv("RAGTUNE_MAX_ROWS", "200")
    bad = write_bad_corpus(tmp_path / "docs")
    workspace = tmp_path / "ws"
    assert ingest([Path("docs")], workspace=workspace, embedder=EMBEDDER, pairs="none") == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == len(bad)
    for name, fragment in bad.items():
        line = next(ln for ln in failed if ln.startswith(f"FAILED docs/{name}: "))
        assert fragment in line
    assert "\n" + json.dumps("docs/new\nline.txt") not in out  # ingested, and a newline name never splits a line
    settings = load_settings(workspace=workspace)
    with open_index(settings, HashEmbedder(64)) as index:
        sources = {c.source for c in index.chunks()}
        ocr = [c for c in index.chunks() if c.source == "docs/notice.png"]
    assert {"docs/good.md", "docs/notice.png", "docs/new\nline.txt"} <= sources
    assert ocr and all(c.ocr for c in ocr)


def test_a_file_gone_bad_keeps_its_indexed_chunks(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "care.html").write_text("<main><h1>Care</h1><p>Wipe the funnel monthly with a damp cloth.</p></main>",
                                    encoding="utf-8")
    workspace = tmp_path / "ws"
    assert ingest([Path("docs")], workspace=workspace, embedder=EMBEDDER, pairs="none") == 0
    (docs / "care.html").write_text("<div>" * 5000 + "</div>" * 5000, encoding="utf-8")
    assert ingest([Path("docs")], workspace=workspace, embedder=EMBEDDER, pairs="none") == 1
    assert "FAILED docs/care.html: HTML nested more than 256" in capsys.readouterr().out
    with open_index(load_settings(workspace=workspace), HashEmbedder(64)) as index:
        assert [c.text for c in index.chunks()] == ["Wipe the funnel monthly with a damp cloth."]


@pytest.mark.parametrize("name", ["new\nline.txt", 'quo"te.txt', " lead.txt"])
def test_odd_names_are_quoted_on_their_failure_line(tmp_path, monkeypatch, capsys, name) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / name).write_bytes(b"")
    ingest([Path("docs")], workspace=tmp_path / "ws", embedder=EMBEDDER, pairs="none")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("FAILED")]
    assert lines == [f"FAILED {json.dumps('docs/' + name, ensure_ascii=False)}: empty file"]
