"""The sample corpus in data/docs and the eval questions in data/eval keep their promises."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "data" / "docs"
TOOLS = REPO / "data" / "tools"
QA = REPO / "data" / "eval" / "qa.jsonl"
CJK = re.compile(r"[\u4e00-\u9fff]")


def _manifest() -> dict[str, dict]:
    """The declared format/encoding of every document, keyed by path relative to data/docs."""
    entries = json.loads((TOOLS / "manifest.json").read_text(encoding="utf-8"))
    return {e["path"]: e for e in entries}


@lru_cache(maxsize=None)
def doc_text(rel: str) -> str:
    """Decode one document the way its manifest entry declares (PDF/DOCX/HTML/text)."""
    entry, path = _manifest()[rel], DOCS / rel
    if entry.get("scanned"):  # an image-only PDF: its text is the source it was rendered from
        return (REPO / entry["generated_from"]).read_text(encoding="utf-8").replace("---page---", "\n")
    if entry["format"] == "pdf":
        from pypdf import PdfReader

        return "\n".join(page.extract_text() for page in PdfReader(path).pages)
    if entry["format"] == "docx":
        import docx

        document = docx.Document(str(path))
        cells = [c.text for t in document.tables for r in t.rows for c in r.cells]
        return "\n".join([p.text for p in document.paragraphs] + cells)
    text = path.read_bytes().decode(entry["encoding"])
    if entry["format"] == "html":
        from bs4 import BeautifulSoup

        return BeautifulSoup(text, "html.parser").get_text(" ")
    return text


def norm(text: str) -> str:
    """Collapse all whitespace runs to one space."""
    return re.sub(r"\s+", " ", text).strip()


def qa_rows() -> list[dict]:
    """Every line of qa.jsonl, parsed; a bad line fails with its line number."""
    rows = []
    for n, line in enumerate(QA.read_text(encoding="utf-8").splitlines(), 1):
        assert line.strip(), f"qa.jsonl line {n} is blank"
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            pytest.fail(f"qa.jsonl line {n} is not JSON: {exc}")
    return rows


def test_manifest_lists_exactly_the_documents():
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*") if p.is_file()}
    assert on_disk == set(_manifest())


def test_corpus_size_and_formats():
    manifest = _manifest()
    assert len(manifest) >= 15
    formats = {e["format"] for e in manifest.values()}
    assert {"markdown", "html", "docx", "pdf", "text"} <= formats
    chinese = [p for p, e in manifest.items() if e["language"].startswith("zh")]
    assert len(chinese) >= 4
    assert all(len(CJK.findall(doc_text(p))) > 500 for p in chinese if not manifest[p].get("scanned"))
    total = sum(len(doc_text(p)) for p in manifest)
    assert total >= 105_000, total


def test_default_splitter_yields_well_over_150_chunks():
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=500, chunk_overlap=60)
    chunks = sum(len(splitter.split_text(doc_text(p))) for p in _manifest())
    assert chunks >= 200, chunks


def test_gb18030_document_is_not_utf8_but_chinese():
    gb = [p for p, e in _manifest().items() if e["encoding"] == "gb18030"]
    assert gb and all(p.endswith(".txt") for p in gb)
    for rel in gb:
        raw = (DOCS / rel).read_bytes()
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")
        text = raw.decode("gb18030")
        assert len(CJK.findall(text)) > 500
        assert "报销" in text


def test_other_encodings_decode_as_declared():
    manifest = _manifest()
    utf16 = [p for p, e in manifest.items() if e["encoding"] == "utf-16"]
    big5 = [p for p, e in manifest.items() if e["encoding"] == "big5"]
    assert utf16 and big5
    for rel in utf16:
        assert (DOCS / rel).read_bytes()[:2] == b"\xff\xfe"
    for rel in utf16 + big5:
        with pytest.raises(UnicodeDecodeError):
            (DOCS / rel).read_bytes().decode("utf-8")
        assert len(CJK.findall(doc_text(rel))) > 500
    utf8_md = [p for p, e in manifest.items() if e["format"] == "markdown" and e["language"] == "zh"]
    assert utf8_md and all(CJK.search((DOCS / p).read_text(encoding="utf-8")) for p in utf8_md)


def test_structured_formats_have_headings_and_tables():
    import docx
    from bs4 import BeautifulSoup
    from pypdf import PdfReader

    manifest = _manifest()
    for rel, entry in manifest.items():
        path = DOCS / rel
        if entry["format"] == "docx":
            document = docx.Document(str(path))
            styles = {p.style.name for p in document.paragraphs}
            assert {"Heading 1", "Heading 2"} <= styles and document.tables, rel
        elif entry["format"] == "html":
            soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
            assert soup.h1 and soup.h2, rel
        elif entry["format"] == "pdf" and not entry.get("scanned"):  # the scan is small on purpose
            assert len(PdfReader(path).pages) >= 1 and len(doc_text(rel)) > 3000, rel
        elif entry["format"] == "markdown":
            text = path.read_text(encoding="utf-8")
            assert re.search(r"^# ", text, re.M) and re.search(r"^## ", text, re.M), rel
    html_tables = [p for p, e in manifest.items() if e["format"] == "html"
                   and BeautifulSoup((DOCS / p).read_text(encoding="utf-8"), "html.parser").table]
    assert html_tables


def test_qa_rows_are_well_formed_and_grounded():
    manifest = _manifest()
    rows = qa_rows()
    assert len(rows) >= 70
    for n, row in enumerate(rows, 1):
        assert set(row) - {"page"} == {"question", "answer", "source"}, f"line {n}: keys {sorted(row)}"
        assert isinstance(row.get("page", 1), int) and row.get("page", 1) >= 1, f"line {n}: page"
        assert isinstance(row["question"], str) and row["question"].strip(), f"line {n}: question"
        if row["answer"] is None:
            assert row["source"] is None, f"line {n}: null answer needs a null source"
            continue
        assert isinstance(row["answer"], str) and row["answer"].strip(), f"line {n}: answer"
        assert row["source"] in manifest, f"line {n}: source {row['source']!r} is not in data/docs"
        text = norm(doc_text(row["source"]))
        assert norm(row["answer"]) in text, f"line {n}: {row['answer']!r} not found in {row['source']}"


def test_qa_mix_covers_languages_refusals_and_every_document():
    rows = qa_rows()
    questions = [r["question"] for r in rows]
    assert len(set(questions)) == len(questions), "duplicate questions"
    assert sum(bool(CJK.search(q)) for q in questions) >= 20
    assert sum(r["answer"] is None for r in rows) >= 5
    covered = {r["source"] for r in rows if r["source"]}
    assert covered == set(_manifest()), sorted(set(_manifest()) - covered)


def test_generated_documents_are_reproducible(monkeypatch, capsys):
    """Rebuilding from data/tools/sources gives byte-identical files and the same manifest."""
    spec = importlib.util.spec_from_file_location("ragtune_data_build_docs", TOOLS / "build_docs.py")
    build_docs = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, build_docs)
    spec.loader.exec_module(build_docs)
    status = build_docs.main(["--check"])
    assert status == 0, capsys.readouterr().out


def test_scanned_pdf_has_no_text_layer_and_ocr_finds_each_answer_on_its_page():
    """The scan is image-only (pypdf reads nothing); OCR reads each question's answer on the cited page."""
    from pypdf import PdfReader

    from ingest.loaders import load_document

    scans = [p for p, e in _manifest().items() if e.get("scanned")]
    assert scans == ["zh/qinglan-reference-standards-scan.pdf"]
    assert (DOCS / scans[0]).stat().st_size < 200_000
    assert not "".join(page.extract_text() for page in PdfReader(DOCS / scans[0]).pages).strip()
    doc = load_document(DOCS / scans[0])
    pages = {s.page: "".join(s.text.split()) for s in doc.segments if s.ocr}
    rows = [r for r in qa_rows() if r["source"] == scans[0]]
    assert len(rows) >= 2 and all("page" in r for r in rows)
    for row in rows:
        assert "".join(row["answer"].split()) in pages[row["page"]], row
    assert "|编号|名称|校准周期|保管人|" in pages[2]  # the scanned table is a table again
