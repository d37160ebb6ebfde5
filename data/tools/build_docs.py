"""Regenerate the DOCX, PDF and non-UTF-8 documents of data/docs from UTF-8 sources.

The sources live in data/tools/sources/ (outside data/docs, which is ingested). Outputs are
byte-for-byte reproducible: fixed document dates, fixed ZIP timestamps, content-derived PDF ids.
Also writes data/tools/manifest.json, which declares the format and encoding of every document.

    .venv/bin/python data/tools/build_docs.py            # rewrite data/docs outputs + manifest
    .venv/bin/python data/tools/build_docs.py --check    # exit 1 if a committed output is stale
    .venv/bin/python data/tools/build_docs.py --out DIR  # write the generated files under DIR
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
SOURCES = TOOLS / "sources"
DOCS = TOOLS.parent / "docs"
MANIFEST = TOOLS / "manifest.json"
FIXED_DATE = datetime(2024, 11, 1, 9, 0, 0, tzinfo=timezone.utc)
ZIP_DATE = (2024, 11, 1, 9, 0, 0)
AUTHOR = "Lumenhollow Instruments Documentation Team"

FORMATS = {".md": "markdown", ".html": "html", ".htm": "html", ".txt": "text", ".pdf": "pdf", ".docx": "docx"}


@dataclass(frozen=True)
class Target:
    """One generated document: its UTF-8 source, its path under data/docs, and how to write it."""

    source: str
    output: str
    kind: str  # docx | pdf | text | scan (an image-only PDF, see build_scan.py)
    encoding: str | None = None  # for kind == "text"
    newline: str = "\n"
    language: str = "en"


TARGETS = (
    Target("halyard-hg2-quickstart.md", "products/halyard-hg2-quickstart.docx", "docx"),
    Target("travel-and-expenses.md", "policies/travel-and-expenses.docx", "docx"),
    Target("field-safety-procedures.md", "safety/field-safety-procedures.pdf", "pdf"),
    Target("calibration-procedure.md", "calibration/calibration-procedure.pdf", "pdf"),
    Target("qinglan-reference-standards-scan.txt", "zh/qinglan-reference-standards-scan.pdf", "scan", language="zh"),
    Target("qinglan-expense-rules.txt", "zh/qinglan-expense-rules.txt", "text", "gb18030", "\r\n", "zh"),
    Target("customer-faq-zh.txt", "zh/customer-faq-zh.txt", "text", "utf-16", "\r\n", "zh"),
    Target("taipei-office-guide.txt", "zh/taipei-office-guide.txt", "text", "big5", "\n", "zh-Hant"),
)


# ---------------------------------------------------------------- Markdown-lite parsing


@dataclass
class Block:
    """A parsed source block: heading (level 1-3), paragraph, bullet, number, or table."""

    kind: str
    text: str = ""
    level: int = 0
    rows: list[list[str]] | None = None


def parse_blocks(text: str) -> list[Block]:
    """Parse the small Markdown subset the sources use into blocks."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line:
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            blocks.append(Block("table", rows=rows))
        else:
            blocks.append(_line_block(line))
            i += 1
    return blocks


def _line_block(line: str) -> Block:
    """Classify one non-table line."""
    heading = re.match(r"(#{1,3}) (.+)", line)
    if heading:
        return Block("heading", heading.group(2), level=len(heading.group(1)))
    if line.startswith("- "):
        return Block("bullet", line[2:])
    number = re.match(r"(\d+)\. (.+)", line)
    if number:
        return Block("number", line, level=int(number.group(1)))
    return Block("paragraph", line)


# ---------------------------------------------------------------- DOCX


def build_docx(source_text: str, title: str) -> bytes:
    """Render the source as a DOCX with Heading 1-3 styles, lists and grid tables."""
    import docx

    document = docx.Document()
    for block in parse_blocks(source_text):
        if block.kind == "heading":
            document.add_heading(block.text, level=block.level)
        elif block.kind == "bullet":
            _add_runs(document.add_paragraph(style="List Bullet"), block.text)
        elif block.kind == "number":
            _add_runs(document.add_paragraph(), block.text)
        elif block.kind == "table":
            _add_docx_table(document, block.rows or [])
        else:
            _add_runs(document.add_paragraph(), block.text)
    props = document.core_properties
    props.title, props.author, props.last_modified_by = title, AUTHOR, AUTHOR
    props.created = props.modified = FIXED_DATE.replace(tzinfo=None)
    props.revision = 1
    buffer = io.BytesIO()
    document.save(buffer)
    return normalise_zip(buffer.getvalue())


def _add_runs(paragraph, text: str) -> None:
    """Add text to a paragraph, turning **bold** spans into bold runs."""
    for i, part in enumerate(re.split(r"\*\*(.+?)\*\*", text)):
        if part:
            paragraph.add_run(part).bold = i % 2 == 1


def _add_docx_table(document, rows: list[list[str]]) -> None:
    """Add a grid table whose first row is the bold header."""
    table = document.add_table(rows=len(rows), cols=len(rows[0]))
    table.style = "Table Grid"
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            cell = table.cell(r, c)
            cell.text = value
            if r == 0:
                for run in cell.paragraphs[0].runs:
                    run.bold = True
    document.add_paragraph()


def normalise_zip(data: bytes) -> bytes:
    """Rewrite a ZIP with fixed timestamps and attributes so that builds are reproducible."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=ZIP_DATE)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o644 << 16
            dst.writestr(fixed, src.read(info.filename))
    return out.getvalue()


# ---------------------------------------------------------------- PDF


def build_pdf(source_text: str, title: str, code: str) -> bytes:
    """Render the source as an A4 PDF with core fonts (latin-1 text that pypdf extracts)."""
    from fpdf import FPDF

    class _Pdf(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("Helvetica", "I", 8)
            self.cell(0, 6, f"Lumenhollow Instruments - {code} - page {self.page_no()}", align="C")

    pdf = _Pdf(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(title)
    pdf.set_author(AUTHOR)
    pdf.set_creator("data/tools/build_docs.py")
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.set_margins(20, 18, 20)
    pdf.add_page()
    for block in parse_blocks(source_text):
        _pdf_block(pdf, block)
    return bytes(pdf.output())


def _pdf_block(pdf, block: Block) -> None:
    """Write one block to the PDF."""
    sizes = {1: 16, 2: 13, 3: 11}
    if block.kind == "heading":
        pdf.ln(3 if block.level > 1 else 0)
        pdf.set_font("Helvetica", "B", sizes[block.level])
        pdf.multi_cell(0, sizes[block.level] * 0.55, block.text, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1.5)
    elif block.kind == "table":
        _pdf_table(pdf, block.rows or [])
    else:
        text = block.text.replace("**", "")
        indent = 5 if block.kind in ("bullet", "number") else 0
        pdf.set_font("Helvetica", "", 10)
        pdf.set_x(pdf.l_margin + indent)
        prefix = "- " if block.kind == "bullet" else ""
        pdf.multi_cell(0, 5, prefix + text, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1.5)


def _pdf_table(pdf, rows: list[list[str]]) -> None:
    """Write a table with a bold header row."""
    pdf.set_font("Helvetica", "", 9)
    with pdf.table(line_height=5, first_row_as_headings=True) as table:
        for row in rows:
            table_row = table.row()
            for value in row:
                table_row.cell(value)
    pdf.ln(3)


# ---------------------------------------------------------------- text encodings


def build_text(source_text: str, encoding: str, newline: str) -> bytes:
    """Encode the text; UTF-16 gets a little-endian BOM, others no BOM."""
    text = source_text.replace("\r\n", "\n").replace("\n", newline)
    if encoding == "utf-16":
        return b"\xff\xfe" + text.encode("utf-16-le")
    return text.encode(encoding)


# ---------------------------------------------------------------- driver


def build_target(target: Target) -> bytes:
    """Produce the bytes of one generated document."""
    source_text = (SOURCES / target.source).read_text(encoding="utf-8")
    title = source_text.splitlines()[0].lstrip("# ").strip()
    if target.kind == "docx":
        return build_docx(source_text, title)
    if target.kind == "scan":
        sys.path.insert(0, str(TOOLS))
        from build_scan import build_scan

        return build_scan(source_text, title, FIXED_DATE)
    if target.kind == "pdf":
        code = re.search(r"Document code: ([A-Z]+-[A-Z]+-\d+)", source_text)
        return build_pdf(source_text, title, code.group(1) if code else "Lumenhollow")
    return build_text(source_text, target.encoding or "utf-8", target.newline)


def manifest_entries(docs: Path) -> list[dict]:
    """Declare format, encoding and language of every document under data/docs."""
    generated = {t.output: t for t in TARGETS}
    entries = []
    for path in sorted(p for p in docs.rglob("*") if p.is_file()):
        rel = path.relative_to(docs).as_posix()
        fmt = FORMATS.get(path.suffix.lower(), "unknown")
        target = generated.get(rel)
        encoding = None if fmt in ("pdf", "docx") else (target.encoding if target and target.encoding else "utf-8")
        language = target.language if target else ("zh" if rel.startswith("zh/") else "en")
        entries.append({
            "path": rel,
            "format": fmt,
            "encoding": encoding,
            "language": language,
            "generated_from": f"data/tools/sources/{target.source}" if target else None,
            **({"scanned": True} if target and target.kind == "scan" else {}),
        })
    return entries


def main(argv: list[str] | None = None) -> int:
    """Write (or check) the generated documents and the manifest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS, help="folder to write the generated files into")
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = parser.parse_args(argv)
    stale = []
    for target in TARGETS:
        data = build_target(target)
        dest = args.out / target.output
        if args.check:
            if not dest.exists() or dest.read_bytes() != data:
                stale.append(target.output)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        print(f"wrote {dest} ({len(data):,} bytes)")
    manifest = json.dumps(manifest_entries(DOCS), ensure_ascii=False, indent=1) + "\n"
    if args.check:
        if not MANIFEST.exists() or MANIFEST.read_text(encoding="utf-8") != manifest:
            stale.append(str(MANIFEST.relative_to(TOOLS.parent)))
        for name in stale:
            print(f"stale: {name} (run data/tools/build_docs.py)")
        return 1 if stale else 0
    if args.out == DOCS:
        MANIFEST.write_text(manifest, encoding="utf-8")
        print(f"wrote {MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
