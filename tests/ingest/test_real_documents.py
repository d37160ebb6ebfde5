"""Real-world documents: OCR of scans and images, tables kept whole, page origins, main-content HTML, bad input.

Every fixture is made here (no downloads): text is rendered with a Debian CJK font to images and to
image-only PDFs, then read back by the real OCR engine (RapidOCR on CPU).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from ingest.loaders import LoadLimits, load_document
from ingest.ocr import NO_OCR_TEXT
from ingest.splitter import SplitConfig, split_document
from ragtune.errors import InputError
from tests.ingest.scans import image_pdf, render_lines

EN = ["Lumenhollow calibration interval", "Recalibrate every twelve months"]
ZH = ["校准周期为十二个月", "逾期须重新校准"]


def squash(text: str) -> str:
    return "".join(text.lower().split())


def error_of(path: Path, **limits) -> InputError:
    with pytest.raises(InputError) as info:
        load_document(path, limits=LoadLimits(**limits))
    assert info.value.path == str(path)
    return info.value


def test_an_image_is_read_by_ocr_in_english_and_chinese(tmp_path: Path) -> None:
    path = tmp_path / "notice.png"
    render_lines(EN + ZH).save(path)
    doc = load_document(path)
    assert doc.format == "image" and doc.ocr_pages == 1
    text = squash(doc.text)
    for words in EN + ZH:
        assert squash(words) in text
    chunks = split_document(doc, SplitConfig())
    assert chunks and all(c.ocr and c.page is None for c in chunks)


def test_an_image_only_pdf_is_ocrd_page_by_page_with_page_numbers(tmp_path: Path) -> None:
    path = image_pdf(tmp_path / "scan.pdf", [EN, ZH])
    doc = load_document(path)
    assert [(s.page, s.ocr) for s in doc.segments] == [(1, True), (2, True)]
    chunks = split_document(doc, SplitConfig())
    pages = {c.page: squash(c.text) for c in chunks}
    assert "twelvemonths" in pages[1] and "校准周期为十二个月" in pages[2]


def test_a_scanned_table_becomes_a_markdown_table(tmp_path: Path) -> None:
    rows = ["Item | Torque", "Lid screw | 2 Nm", "Base bolt | 12 Nm"]
    path = tmp_path / "table.png"
    render_lines(rows, columns=2).save(path)
    text = load_document(path).text
    assert text.startswith("| Item | Torque |\n|---|---|")
    rows = [squash(line) for line in text.split("\n")[2:]]  # PP-OCR may drop a space between words
    assert rows == ["|lidscrew|2nm|", "|basebolt|12nm|"]


def test_pdf_table_header_repeats_in_every_chunk_that_holds_part_of_it(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=10)
    pdf.multi_cell(0, 6, "Torque values for the Skerrow S3 mast, checked at every service visit.",
                   new_x="LMARGIN", new_y="NEXT")
    with pdf.table() as table:
        for row in [("Fastener", "Torque", "Tool")] + [(f"Bolt M{i}", f"{i * 2} Nm", "T-wrench")
                                                       for i in range(4, 30)]:
            cells = table.row()
            for value in row:
                cells.cell(value)
    path = tmp_path / "torque.pdf"
    path.write_bytes(bytes(pdf.output()))
    doc = load_document(path)
    assert "| Fastener | Torque | Tool |\n|---|---|---|\n| Bolt M4 | 8 Nm | T-wrench |" in doc.text
    chunks = split_document(doc, SplitConfig(chunk_size=200, chunk_overlap=0))
    table_chunks = [c for c in chunks if "Bolt M" in c.text]
    assert len(table_chunks) > 2 and all(c.page == 1 for c in chunks)
    for c in table_chunks:
        lines = c.text.split("\n")
        head = lines.index("| Fastener | Torque | Tool |")
        assert lines[head + 1] == "|---|---|---|"
    rows = [ln for c in table_chunks for ln in c.text.split("\n") if ln.startswith("| Bolt")]
    assert rows == [f"| Bolt M{i} | {i * 2} Nm | T-wrench |" for i in range(4, 30)]  # every row once, whole


def test_text_pdf_pages_are_not_ocrd_and_keep_their_page(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for n in range(1, 4):
        pdf.add_page()
        pdf.multi_cell(0, 6, f"Page {n} text about the Halyard HG-2 gateway and its uplink settings.")
    path = tmp_path / "three.pdf"
    path.write_bytes(bytes(pdf.output()))
    doc = load_document(path, limits=LoadLimits(ocr_max_pages=1))
    assert [(s.page, s.ocr) for s in doc.segments] == [(1, False), (2, False), (3, False)]
    assert [c.page for c in split_document(doc, SplitConfig())] == [1, 2, 3]


NAV_PAGE = """<html><head><title>Skerrow S3 care</title></head><body>
<header><div class="logo">Lumenhollow Instruments</div><nav><ul><li><a href="/">Home</a></li>
<li><a href="/p">Products</a></li><li><a href="/s">Support</a></li></ul></nav></header>
<div id="toc"><ul><li><a href="#a">1 Cleaning</a></li><li><a href="#b">2 Storage</a></li></ul></div>
<main><h1>Skerrow S3 care</h1><h2 id="a">1 Cleaning</h2>
<p>Wipe the rain gauge funnel with a damp cloth every month and check the sensor mast bolts.</p>
<ul><li><a href="/a">Related: mast</a></li><li><a href="/b">Related: funnel</a></li><li><a href="/c">Related: bolts</a></li></ul>
<h2 id="b">2 Storage</h2><p>Store the station dry, below 40 degrees, with the battery disconnected.</p>
<p>Yes.</p></main>
<footer><p>Copyright 2024 Lumenhollow Instruments. Privacy. Terms.</p></footer></body></html>"""


def test_html_chunks_hold_only_the_main_text_and_no_fragments(tmp_path: Path) -> None:
    path = tmp_path / "care.html"
    path.write_text(NAV_PAGE, encoding="utf-8")
    chunks = split_document(load_document(path), SplitConfig(min_chunk=40))
    text = "\n".join(c.text for c in chunks)
    for boilerplate in ("Home", "Products", "Copyright", "Related:", "Lumenhollow Instruments", "1 Cleaning\n"):
        assert boilerplate not in text
    assert "rain gauge funnel" in text and "battery disconnected" in text
    assert [c.section for c in chunks] == ["Skerrow S3 care > 1 Cleaning", "Skerrow S3 care > 2 Storage"]
    assert chunks[-1].text.endswith("battery disconnected.\n\nYes.")  # "Yes." merged, not a chunk


def test_docx_tables_are_markdown_tables(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Allowances", level=1)
    table = document.add_table(rows=3, cols=2)
    for r, row in enumerate([("Grade", "Per day"), ("A", "40"), ("B", "55")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.save(tmp_path / "a.docx")
    chunks = split_document(load_document(tmp_path / "a.docx"), SplitConfig())
    assert [(c.section, c.text) for c in chunks] == [
        ("Allowances", "| Grade | Per day |\n|---|---|\n| A | 40 |\n| B | 55 |")]


# --- bad input: one named failure each ---------------------------------------------------------------

def test_ocr_timeout_names_the_page_where_it_stopped(tmp_path: Path) -> None:
    err = error_of(image_pdf(tmp_path / "slow.pdf", [EN, ZH, EN]), ocr_timeout_s=1e-6)
    assert "OCR took longer than" in err.reason and "stopped after page 1" in err.reason
    assert "RAGTUNE_OCR_TIMEOUT_S" in err.reason


def test_page_limit_breach_is_named_before_any_ocr(tmp_path: Path) -> None:
    err = error_of(image_pdf(tmp_path / "long.pdf", [EN, EN, EN]), ocr_max_pages=2)
    assert err.reason.startswith("3 pages need OCR") and "RAGTUNE_OCR_MAX_PAGES" in err.reason


def test_image_without_text_and_corrupt_image(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (400, 300), "white").save(tmp_path / "blank.png")
    assert error_of(tmp_path / "blank.png").reason == NO_OCR_TEXT
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert error_of(tmp_path / "broken.jpg").reason.startswith("corrupt image")


def test_all_navigation_html_is_refused(tmp_path: Path) -> None:
    links = "".join(f"<li><a href='/{i}'>Chapter {i}</a></li>" for i in range(30))
    (tmp_path / "menu.html").write_text(f"<html><body><nav><ul>{links}</ul></nav><footer>(c) LHI</footer>"
                                        "</body></html>", encoding="utf-8")
    assert "only navigation" in error_of(tmp_path / "menu.html").reason


def test_200k_nested_divs_fail_fast_with_a_named_limit(tmp_path: Path) -> None:
    depth = 200_000
    (tmp_path / "deep.html").write_text("<html><body>" + "<div>" * depth + "x" + "</div>" * depth
                                        + "</body></html>", encoding="utf-8")
    err = error_of(tmp_path / "deep.html")
    assert "nested more than 256" in err.reason and "RAGTUNE_MAX_HTML_DEPTH" in err.reason


def test_csv_over_the_row_limit_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("sku,name\n" + "".join(f"{i},item {i}\n" for i in range(5000)), encoding="utf-8")
    err = error_of(path, max_rows=1000)
    assert err.row == 1002 and "RAGTUNE_MAX_ROWS" in err.reason


def test_csv_chunks_carry_their_row_range(tmp_path: Path) -> None:
    path = tmp_path / "parts.csv"
    path.write_text("sku,name,stock\n" + "".join(f"P{i},part number {i},{i * 3}\n" for i in range(40)),
                    encoding="utf-8")
    chunks = split_document(load_document(path), SplitConfig(chunk_size=200, chunk_overlap=0))
    assert chunks[0].row_start == 2 and chunks[-1].row_end == 41
    assert all(a.row_end + 1 == b.row_start for a, b in zip(chunks, chunks[1:], strict=False))
    first = chunks[0]
    assert first.text.startswith("sku: P0\nname: part number 0") and f"sku: P{first.row_end - 2}\n" in first.text


def test_time_limit_is_a_named_failure(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(f'{{"q": "question {i}"}}\n' for i in range(3000)), encoding="utf-8")
    limits = dataclasses.replace(LoadLimits(max_seconds=0.001), started=time.monotonic() - 1)
    with pytest.raises(InputError) as info:
        load_document(path, limits=limits)
    assert "RAGTUNE_MAX_FILE_SECONDS" in info.value.reason and "row 1000" in info.value.reason
