"""Loading real files of every format and encoding, and every kind of bad file, into Markdown-ish text."""

from __future__ import annotations

import codecs
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from ingest.encoding import BINARY_REASON, decode_text
from ingest.loaders import MB, LoadedDocument, load_document, max_bytes_from_mb
from ragtune.errors import InputError
from tests.ingest import as_ordinary_user, world_dir

LIMIT = 10 * MB
SIMPLIFIED = ("第一章 总则\n本手册适用于星河研究院全体员工。员工每年享有十五天带薪年假，须提前两周向部门经理申请！"
              "病假需提供医院证明？出差报销应在返回后十个工作日内提交；型号 XR-200 的最大功率为 1500 瓦。")
TRADITIONAL = ("第二章 請假規定\n員工請假應事先填寫請假單，經主管核准後方可離開工作崗位。事假每年以七日為限。"
               "特休假依年資計算：滿一年者七日，滿三年者十日。")
ENGLISH = "Safety manual.\nAlways wear gloves when handling the XR-200 unit. Café prices: 10 €."


def load(path: Path, **kw) -> LoadedDocument:
    return load_document(path, max_bytes=kw.get("max_bytes", LIMIT))


def write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def expect_error(path: Path, fragment: str, **kw) -> InputError:
    """Loading must raise InputError naming the file and containing `fragment` in its reason."""
    with pytest.raises(InputError) as info:
        load(path, **kw)
    assert info.value.path == str(path)
    assert fragment in info.value.reason, info.value.reason
    assert str(path) in str(info.value)
    return info.value


# --- encodings -------------------------------------------------------------------------------------------

ENCODED = [
    ("utf8", ENGLISH + "\n" + SIMPLIFIED, lambda t: t.encode("utf-8"), "utf-8"),
    ("utf8-bom", SIMPLIFIED, lambda t: codecs.BOM_UTF8 + t.encode("utf-8"), "utf-8-sig"),
    ("utf16le-bom", SIMPLIFIED + ENGLISH, lambda t: codecs.BOM_UTF16_LE + t.encode("utf-16-le"), "utf-16-le"),
    ("utf16be-bom", SIMPLIFIED + ENGLISH, lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"), "utf-16-be"),
    ("utf16le-nobom", ENGLISH, lambda t: t.encode("utf-16-le"), "utf-16-le"),
    ("utf32-bom", TRADITIONAL, lambda t: codecs.BOM_UTF32_LE + t.encode("utf-32-le"), "utf-32-le"),
    ("gb18030", SIMPLIFIED + "\n生僻字：𠮷。", lambda t: t.encode("gb18030"), "gb18030"),
    ("gbk", SIMPLIFIED, lambda t: t.encode("gbk"), "gb18030"),  # GB18030 is a superset of GBK
    ("gb2312-short", "员工手册。", lambda t: t.encode("gb2312"), "gb18030"),
    ("big5", TRADITIONAL, lambda t: t.encode("big5"), "big5"),
    ("cp1252", "Straße über Größe. Café résumé naïve, 10 € fee.", lambda t: t.encode("cp1252"), "cp1252"),
]


@pytest.mark.parametrize(("name", "text", "encode", "encoding"), ENCODED, ids=[e[0] for e in ENCODED])
def test_text_encodings_are_detected(tmp_path: Path, name: str, text: str, encode, encoding: str) -> None:
    doc = load(write(tmp_path / f"{name}.txt", encode(text)))
    assert doc.text == text
    assert doc.encoding == encoding and doc.format == "text"
    assert decode_text(encode(text), tmp_path / "x.txt") == (text, encoding)


def test_mixed_chinese_english_gb18030_not_misread_as_korean(tmp_path: Path) -> None:
    text = "Policy 政策: 员工 must apply 两周 before leave. 版本 v2.1"
    assert load(write(tmp_path / "mixed.md", text.encode("gb18030"))).text == text


def test_utf16_without_bom_mostly_chinese(tmp_path: Path) -> None:
    text = SIMPLIFIED + "\nVersion 2, 2024.\n"
    doc = load(write(tmp_path / "u16.txt", text.encode("utf-16-le")))
    assert (doc.text, doc.encoding) == (text.strip(), "utf-16-le")


def test_utf8_with_a_few_bad_bytes_is_still_utf8(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = (SIMPLIFIED * 3).encode("utf-8")
    doc = load(write(tmp_path / "cut.md", good[:-1]))  # last character truncated
    assert doc.encoding == "utf-8" and doc.text == (SIMPLIFIED * 3)[:-1] + "\ufffd"
    assert "invalid UTF-8" in caplog.text and "cut.md" in caplog.text
    cut = len(SIMPLIFIED[:20].encode("utf-8"))
    stray = good[:cut] + b"\xe9" + good[cut:]  # one stray Latin-1 byte between two characters
    assert load(write(tmp_path / "stray.txt", stray)).text.replace("\ufffd", "") == SIMPLIFIED * 3


def test_crlf_line_endings_are_normalised(tmp_path: Path) -> None:
    doc = load(write(tmp_path / "dos.txt", "line one\r\nline two\r\n".encode("utf-16")))
    assert doc.text == "line one\nline two"


# --- formats -----------------------------------------------------------------------------------------------

def test_markdown_keeps_headings_and_drops_front_matter(tmp_path: Path) -> None:
    md = "---\ntitle: Handbook\n---\n# Handbook\n\nIntro.\n\nLeave policy\n------------\n\nTen days.\n"
    doc = load(write(tmp_path / "guide.markdown", md))
    assert doc.format == "markdown" and doc.encoding == "utf-8"
    assert doc.text == "# Handbook\n\nIntro.\n\n## Leave policy\n\nTen days."


def test_html_headings_tables_and_dropped_scripts(tmp_path: Path) -> None:
    html = """<!doctype html><html><head><title>Ignored title</title><style>p {color: red}</style>
    <script>var secret = 1;</script></head><body>
    <h1>Operations   Handbook</h1><p>Opening
       hours are <b>9 to 5</b>.<br>Closed on Sundays.</p><!-- a comment -->
    <h2>Prices</h2><table><tr><th>Item</th><th>Price</th></tr><tr><td>XR-200</td><td>99</td></tr></table>
    <ul><li>First</li><li>Second</li></ul><h3></h3><noscript>Enable JS</noscript></body></html>"""
    doc = load(write(tmp_path / "page.htm", html))
    assert doc.format == "html"
    assert doc.text == ("# Operations Handbook\n\nOpening hours are 9 to 5.\nClosed on Sundays.\n\n## Prices\n\n"
                        "| Item | Price |\n|---|---|\n| XR-200 | 99 |\n\n- First\n- Second")


def test_indented_html_lines_are_stripped(tmp_path: Path) -> None:
    html = "<body>\n  <ul>\n    <li>One</li>\n    <li>Two\n</li>\n  </ul>\n  <div>\n    <p>Para</p>\n  </div>\n</body>"
    assert load(write(tmp_path / "list.html", html)).text == "- One\n- Two\n\nPara"


def test_html_title_becomes_heading_without_h1_and_meta_charset_is_honoured(tmp_path: Path) -> None:
    html = ('<html><head><meta charset="gb2312"><title>员工手册</title></head>'
            f'<body><h2>假期</h2><p>{SIMPLIFIED}</p></body></html>')
    doc = load(write(tmp_path / "cn.html", html.encode("gb18030")))
    assert doc.text.startswith("# 员工手册\n\n## 假期\n\n第一章 总则")
    assert doc.encoding == "gb2312"


def make_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Operations Handbook", level=1)
    document.add_paragraph("Welcome to the institute.")
    document.add_heading("Leave", level=2)
    document.add_paragraph("Apply two weeks ahead.")
    document.add_paragraph("Bring the form", style="List Bullet")
    table = document.add_table(rows=2, cols=3)
    for r, row in enumerate([["Type", "Days", "Paid"], ["Annual", "15", "yes"]]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_heading("细则", level=3)
    document.add_paragraph(SIMPLIFIED)
    document.save(path)
    return path


def test_docx_headings_tables_and_lists(tmp_path: Path) -> None:
    doc = load(make_docx(tmp_path / "handbook.docx"))
    assert doc.format == "docx" and doc.encoding is None
    assert doc.text == ("# Operations Handbook\n\nWelcome to the institute.\n\n## Leave\n\nApply two weeks ahead."
                        "\n\n- Bring the form\n\n| Type | Days | Paid |\n|---|---|---|\n| Annual | 15 | yes |\n\n### 细则\n\n" + SIMPLIFIED)


def make_pdf(path: Path, pages: list[str]) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    path.write_bytes(bytes(pdf.output()))
    return path


def test_pdf_text_of_every_page(tmp_path: Path) -> None:
    doc = load(make_pdf(tmp_path / "manual.pdf", ["Safety manual. Wear gloves.", "Page two: storage rules."]))
    assert doc.format == "pdf" and doc.encoding is None
    assert "Safety manual. Wear gloves." in doc.text
    assert doc.text.index("Wear gloves") < doc.text.index("Page two: storage rules.")


def make_structured_pdf(path: Path) -> Path:
    """A PDF laid out like a manual: a 16 pt title, 13/11 pt headings, wrapped 10 pt paragraphs, a list."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    for size, text in [(16, "Field Safety Procedures"), (10, LONG_PARAGRAPH), (13, "1. Planning a trip"),
                       (11, "1.1 Trip plan"), (10, LONG_PARAGRAPH.upper()), (10, "- first item"),
                       (10, "- second item")]:
        pdf.set_font("Helvetica", style="B" if size > 10 else "", size=size)
        pdf.multi_cell(0, size * 0.6, text, new_x="LMARGIN", new_y="NEXT")
    path.write_bytes(bytes(pdf.output()))
    return path


LONG_PARAGRAPH = ("Every field trip needs a trip plan in the Beacon app, approved by the trip leader's manager "
                  "before departure. The plan lists the people, the sites, the vehicles and the planned times on "
                  "site, the tide times for tidal sites, and the emergency contacts for the whole team.")


def test_pdf_font_sizes_become_headings_and_wrapped_lines_paragraphs(tmp_path: Path) -> None:
    doc = load(make_structured_pdf(tmp_path / "safety.pdf"))
    assert doc.text == ("# Field Safety Procedures\n\n" + LONG_PARAGRAPH + "\n\n## 1. Planning a trip\n\n"
                        "### 1.1 Trip plan\n\n" + LONG_PARAGRAPH.upper() + "\n\n- first item\n\n- second item")


def make_book_pdf(path: Path, body_pages: list[str]) -> Path:
    """A PDF laid out like a published standard: a contents page with dot leaders, then body
    pages under a running chapter title and a page-number footer."""
    from fpdf import FPDF

    class Book(FPDF):
        def header(self) -> None:
            if self.page_no() > 1:
                self.set_font("Helvetica", size=10)
                self.cell(0, 6, "The Root Filesystem", new_x="LMARGIN", new_y="NEXT")

        def footer(self) -> None:
            self.set_y(-15)
            self.set_font("Helvetica", size=10)
            self.cell(0, 6, str(self.page_no() - 1) if self.page_no() > 1 else "i", align="C")

    pdf = Book()
    pdf.set_font("Helvetica", size=10)
    pdf.add_page()
    for n, title in enumerate(["1. Introduction", "2. The Filesystem", "3. /run", "4. /tmp"], 1):
        pdf.cell(0, 6, f"{title} {'.' * 60} {n}", new_x="LMARGIN", new_y="NEXT")
    for text in body_pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text, new_x="LMARGIN", new_y="NEXT")
    path.write_bytes(bytes(pdf.output()))
    return path


def test_pdf_running_headers_footers_and_contents_pages_are_dropped(tmp_path: Path) -> None:
    """The FHS 3.0 PDF glued "The Root Filesystem" and the page number into the chunks that
    began on a new page, and its contents pages became chunks of section titles."""
    body = ["PID files must be placed in /run.", "Temporary files go to /tmp.",
            "Lock files are kept in /var/lock.", "Logs are written to /var/log."]
    body[2] += "\nLeave types ........ 27"
    text = load(make_book_pdf(tmp_path / "fhs.pdf", body)).text
    assert "The Root Filesystem" not in text and "2. The Filesystem" not in text
    assert all(rule in text for rule in body[:2]) and "Leave types ........ 27" in text
    assert not any(line.strip().isdigit() or line.strip() == "i" for line in text.splitlines())
    few = load(make_book_pdf(tmp_path / "short.pdf", body[:1])).text
    assert "The Root Filesystem" in few  # on one page it is no running header


def test_pdf_heading_wrapped_onto_two_lines_is_one_heading(tmp_path: Path) -> None:
    """FHS 3.0 sets "3.13. /opt : Add-on application software" and "packages" on two lines of
    the heading font: they became a section and a subsection of it."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=16)
    pdf.multi_cell(80, 7, "3.13. /opt : Add-on application software packages", new_x="LMARGIN",
                   new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    pdf.multi_cell(0, 6, " ".join([LONG_PARAGRAPH] * 4), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", style="B", size=16)
    pdf.multi_cell(0, 7, "3.14. /root", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    pdf.multi_cell(0, 6, LONG_PARAGRAPH.upper(), new_x="LMARGIN", new_y="NEXT")
    text = load(write(tmp_path / "opt.pdf", bytes(pdf.output()))).text
    assert text.startswith("# 3.13. /opt : Add-on application software packages\n\n")
    assert "\n\n# 3.14. /root\n\n" in text


def test_pdf_with_empty_user_password_is_readable(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    plain = make_pdf(tmp_path / "plain.pdf", ["Owner-locked but openable."])
    writer = PdfWriter(clone_from=plain)
    writer.encrypt(user_password="", owner_password="owner")
    writer.write(tmp_path / "owner-only.pdf")
    assert "Owner-locked but openable." in load(tmp_path / "owner-only.pdf").text


def test_json_records(tmp_path: Path) -> None:
    records = [{"question": "Opening hours?", "answer": "9 to 5", "meta": {"lang": "en", "tags": ["a", "b"]}},
               {"question": "年假几天？", "answer": "十五天", "empty": None}]
    doc = load(write(tmp_path / "faq.json", json.dumps(records, ensure_ascii=False)))
    assert doc.format == "json"
    assert doc.text == ("question: Opening hours?\nanswer: 9 to 5\nmeta.lang: en\nmeta.tags: a, b\n\n"
                        "question: 年假几天？\nanswer: 十五天")


def test_json_wrapper_object_holds_the_records(tmp_path: Path) -> None:
    doc = load(write(tmp_path / "faq.json", json.dumps({"faqs": [{"q": "Q1", "a": "A1"}, {"q": "Q2", "a": "A2"}]})))
    assert doc.text == "q: Q1\na: A1\n\nq: Q2\na: A2"


def test_jsonl_and_csv_records(tmp_path: Path) -> None:
    lines = [json.dumps({"q": "Q1", "a": "A1"}), "", json.dumps({"q": "Q2", "a": "A2"})]
    assert load(write(tmp_path / "faq.jsonl", "\n".join(lines))).text == "q: Q1\na: A1\n\nq: Q2\na: A2"
    csv_text = 'name;role;note\nAda;engineer;"likes; semicolons"\nBo;manager;\n'
    doc = load(write(tmp_path / "staff.csv", csv_text))
    assert doc.format == "csv"
    assert doc.text == "name: Ada\nrole: engineer\nnote: likes; semicolons\n\nname: Bo\nrole: manager"


# --- bad files ---------------------------------------------------------------------------------------------

def test_unreadable_file() -> None:
    with world_dir() as folder:
        path = write(folder / "secret.txt", "classified")
        os.chmod(path, 0)
        with as_ordinary_user():
            expect_error(path, "unreadable: Permission denied")


def test_directory_with_a_document_name_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "folder.md").mkdir()
    expect_error(tmp_path / "folder.md", "unreadable")


def test_pipe_and_symlink_loop_are_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.txt")
    expect_error(tmp_path / "pipe.txt", "not a regular file")
    (tmp_path / "loop.md").symlink_to(tmp_path / "loop.md")
    expect_error(tmp_path / "loop.md", "symlink loop")
    expect_error(tmp_path / "missing.txt", "No such file")


def test_over_size_limit_names_size_and_setting(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with open(path, "wb") as fh:
        fh.truncate(int(12.3 * MB))  # sparse: instant
    err = expect_error(path, "file is 12.3 MB, over the 10 MB limit (RAGTUNE_MAX_FILE_MB)",
                       max_bytes=max_bytes_from_mb(10))
    assert err.row is None
    assert load(write(tmp_path / "small.txt", "x" * 1000), max_bytes=1000).text == "x" * 1000
    expect_error(write(tmp_path / "small2.txt", "x" * 1001), "over the", max_bytes=1000)


@pytest.mark.parametrize("name", ["empty.txt", "empty.md", "empty.html", "empty.pdf", "empty.docx", "empty.csv"])
def test_empty_files(tmp_path: Path, name: str) -> None:
    expect_error(write(tmp_path / name, b""), "empty file")


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("blank.txt", b" \n\t\r\n  \n", "empty file (only whitespace)"),
    ("bom-only.md", codecs.BOM_UTF16_LE, "empty file (only whitespace)"),
    ("shell.html", b"<html><head><script>x()</script></head><body> </body></html>", "empty file (only whitespace)"),
    ("empty-list.json", b"[]", "no records with values"),
    ("header-only.csv", b"a,b,c\n", "no records with values"),
    ("nulls.jsonl", b'{"a": null}\n\n', "no records with values"),
])
def test_whitespace_only_files(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    expect_error(write(tmp_path / name, data), reason)


def test_docx_without_text(tmp_path: Path) -> None:
    import docx

    docx.Document().save(tmp_path / "blank.docx")
    expect_error(tmp_path / "blank.docx", "no text in document")


@pytest.mark.parametrize(("name", "data"), [
    ("random.txt", bytes(range(256)) * 8),
    ("image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200)),
    ("controls.txt", bytes([1, 2, 3, 4, 5, 6, 7, 8, 14, 15, 16]) * 20),
    ("gzip.csv", b"\x1f\x8b\x08\x00" + bytes(range(1, 256)) * 3),
    ("exe.html", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" * 10),
    ("zip.json", b"PK\x03\x04" + bytes(range(256))),
])
def test_binary_with_text_extension(tmp_path: Path, name: str, data: bytes) -> None:
    expect_error(write(tmp_path / name, data), BINARY_REASON)


def test_invalid_bom_text_names_the_problem(tmp_path: Path) -> None:
    expect_error(write(tmp_path / "bad.txt", codecs.BOM_UTF8 + b"ok \xff\xfe\xfd broken"), "utf-8-sig")


def test_corrupt_docx(tmp_path: Path) -> None:
    expect_error(write(tmp_path / "garbage.docx", b"this is not a zip file at all"), "corrupt .docx file")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hello.txt", "a zip, but not a Word document")
    expect_error(write(tmp_path / "zip.docx", buf.getvalue()), "corrupt .docx file")
    good = make_docx(tmp_path / "good.docx").read_bytes()
    expect_error(write(tmp_path / "truncated.docx", good[: len(good) // 2]), "corrupt .docx file")
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
    expect_error(write(tmp_path / "legacy.docx", ole), "encrypted or legacy Word (.doc)")


def test_corrupt_pdf(tmp_path: Path) -> None:
    good = make_pdf(tmp_path / "good.pdf", ["Some text."]).read_bytes()
    expect_error(write(tmp_path / "truncated.pdf", good[: len(good) // 3]), "corrupt PDF")
    expect_error(write(tmp_path / "garbage.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 4), "corrupt PDF")
    expect_error(write(tmp_path / "text.pdf", b"just some text pretending to be a PDF"), "not a PDF file")


def test_encrypted_pdf(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=make_pdf(tmp_path / "plain.pdf", ["Top secret."]))
    writer.encrypt(user_password="secret", owner_password="owner")
    writer.write(tmp_path / "locked.pdf")
    expect_error(tmp_path / "locked.pdf", "encrypted PDF")


def test_pdf_without_text_is_probably_scanned(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 80, 40, style="F")  # a drawing, no text: what a scan looks like to a text extractor
    write(tmp_path / "scan.pdf", bytes(pdf.output()))
    expect_error(tmp_path / "scan.pdf", "no extractable text (scanned?)")


def test_bad_jsonl_line_names_its_row(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.jsonl", '{"q": 1}\n\n{"q": 2\n{"q": 3}\n')
    err = expect_error(path, "invalid JSON")
    assert err.row == 3 and "row 3" in str(err)


def test_bad_json_names_its_line(tmp_path: Path) -> None:
    err = expect_error(write(tmp_path / "faq.json", '[\n {"q": 1},\n {"q": }\n]'), "invalid JSON")
    assert err.row == 3


def test_unsupported_extension(tmp_path: Path) -> None:
    expect_error(write(tmp_path / "notes.rtf", "{\\rtf1}"), "unsupported file type '.rtf'")


def test_html_pre_blocks_are_fenced_so_shell_prompts_are_not_headings(tmp_path):
    """A `# command` line of a <pre> block (a root prompt) stays text, not a section heading."""
    from ingest.splitter import SplitConfig, split_document

    page = tmp_path / "locale.html"
    page.write_text("<html><body><h1>Locales</h1><p>Reconfigure them:</p><pre># dpkg-reconfigure "
                    "locales\n# locale -a</pre><p>Then log in again.</p></body></html>",
                    encoding="utf-8")
    doc = load_document(page)
    assert "```\n# dpkg-reconfigure locales\n# locale -a\n```" in doc.text
    chunks = split_document(doc, SplitConfig())
    assert all("dpkg" not in c.section for c in chunks)
    assert any("# dpkg-reconfigure locales" in c.text for c in chunks)


def test_docbook_navigation_header_and_footer_are_dropped(tmp_path):
    page = tmp_path / "ch01.html"
    page.write_text('<html><body><div class="navheader"><table><tr><td>Chapter 1</td><td>'
                    '<a href="ch02.html">Next</a></td></tr></table></div><h1>Basics</h1><p>Debian '
                    'was founded in 1993.</p><div class="navfooter"><table><tr><td>Chapter 14. '
                    'Redistributing</td><td>Chapter 16. General</td></tr></table></div></body></html>',
                    encoding="utf-8")
    text = load_document(page).text
    assert "founded in 1993" in text and "Chapter 14" not in text and "Next" not in text
