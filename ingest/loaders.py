"""Load one document file into Markdown-ish text: headings as '#' lines, tables as 'a | b' lines, records as blocks.

Every problem with a file (unreadable, too large, empty, binary with a text extension, corrupt, encrypted,
no extractable text, a bad JSON line) raises `ragtune.errors.InputError(path, reason)`; nothing else escapes
for bad input. Heavy parsers (BeautifulSoup, pypdf, python-docx) are imported only when their format is loaded.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ragtune.errors import InputError

from .encoding import BINARY_REASON, MIN_PRINTABLE_RATIO, decode_text, printable_ratio

MB = 1024 * 1024
FORMATS: dict[str, str] = {
    ".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html",
    ".pdf": "pdf", ".docx": "docx", ".json": "json", ".jsonl": "jsonl", ".csv": "csv",
}
NO_PDF_TEXT = "no extractable text (scanned?)"


@dataclass
class LoadedDocument:
    """A document's text (Markdown-ish), its format name and the text encoding detected (None for binary formats)."""

    path: Path
    text: str
    format: str
    encoding: str | None


def max_bytes_from_mb(max_file_mb: float) -> int:
    """Convert the `max_file_mb` setting into the byte limit `load_document` takes (1 MB = 2**20 bytes)."""
    return int(max_file_mb * MB)


def _fmt_mb(n: float) -> str:
    """Format a byte count as megabytes for messages ('12.3', '10')."""
    return f"{n / MB:.1f}".removesuffix(".0")


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """Read a file's bytes, refusing unreadable, oversized and empty files with a clear reason."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise InputError(path, "unreadable: is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise InputError(path, "unreadable: not a regular file (a pipe, socket or device)")
        size = info.st_size
        if size > max_bytes:
            raise InputError(path, f"file is {_fmt_mb(size)} MB, over the {_fmt_mb(max_bytes)} MB limit "
                                   "(RAGTUNE_MAX_FILE_MB)")
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError(path, "symlink loop") from None
        raise InputError(path, f"unreadable: {err.strerror or err}") from None
    if len(data) > max_bytes:  # grew while we read it
        raise InputError(path, f"file is over the {_fmt_mb(max_bytes)} MB limit (RAGTUNE_MAX_FILE_MB)")
    if not data:
        raise InputError(path, "empty file")
    return data


# --- plain text and Markdown ---------------------------------------------------------------------------

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n.*?\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_SETEXT = re.compile(r"^(?P<title>[^\n#>\-*=`|][^\n]*)\n(?P<rule>=+|-+)[ \t]*$", re.M)


def _normalise_newlines(text: str) -> str:
    """Unify line endings and drop a stray BOM / NULs."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "").replace("\x00", "")


def _tidy(text: str) -> str:
    """Strip trailing spaces from lines and keep at most one blank line between blocks."""
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _markdown(text: str) -> str:
    """Markdown as-is, minus YAML front matter, with setext headings rewritten as ATX '#' headings."""
    text = _FRONT_MATTER.sub("", text, count=1)
    if "```" in text or "~~~" in text:
        return text  # setext rewriting could touch code blocks; ATX headings still work
    return _SETEXT.sub(lambda m: ("# " if m["rule"][0] == "=" else "## ") + m["title"].strip(), text)


# --- HTML ----------------------------------------------------------------------------------------------

_DROP_TAGS = ["script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "head"]
_BLOCK_TAGS = ["p", "div", "section", "article", "main", "header", "footer", "aside", "nav", "ul", "ol",
               "dl", "dt", "dd", "pre", "blockquote", "figure", "figcaption", "form", "fieldset",
               "address", "details", "summary", "hr", "tr", "caption"]  # li: one line each, see html_to_text
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)


def _decode_html(data: bytes, path: Path) -> tuple[str, str]:
    """Decode HTML: BOM / UTF-8 first, then a <meta charset> declaration, then detection."""
    match = _META_CHARSET.search(data[:4096])
    if match is None or data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        return decode_text(data, path)
    declared = match.group(1).decode("ascii").lower()
    codec = {"gb2312": "gb18030", "gbk": "gb18030", "big5": "big5hkscs"}.get(declared, declared)
    for name in ("utf-8", codec):
        try:
            text = data.decode(name)
        except (LookupError, UnicodeDecodeError):
            continue
        if printable_ratio(text) < MIN_PRINTABLE_RATIO:
            raise InputError(path, BINARY_REASON)
        return text, "utf-8" if name == "utf-8" else declared
    return decode_text(data, path)  # a wrong or unknown declaration: detect instead


def _cell_lines(table) -> list[str]:
    """Render an HTML table as one 'a | b | c' line per row."""
    rows = []
    for tr in table.find_all("tr"):
        cells = [c.get_text(" ", strip=True) for c in tr.find_all(["td", "th"])]
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def html_to_text(markup: str) -> str:
    """Convert HTML to Markdown-ish text: h1-h6 as '#' lines, tables as rows, scripts/styles dropped."""
    from bs4 import BeautifulSoup, Comment, Declaration, Doctype, NavigableString, ProcessingInstruction

    soup = BeautifulSoup(markup, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for special in soup.find_all(string=lambda s: isinstance(s, (Comment, Declaration, Doctype,
                                                                   ProcessingInstruction))):
        special.extract()
    for s in soup.find_all(string=True):
        if type(s) is NavigableString and s.find_parent("pre") is None and s.parent is not None:
            s.replace_with(re.sub(r"\s+", " ", str(s)))
    for table in soup.find_all("table"):
        if table.find_parent("table") is None and table.parent is not None:
            table.replace_with("\n\n" + "\n".join(_cell_lines(table)) + "\n\n")
    headings = soup.find_all(re.compile(r"^h[1-6]$"))
    for h in headings:
        text = h.get_text(" ", strip=True)
        h.replace_with(f"\n\n{'#' * int(h.name[1])} {text}\n\n" if text else "\n\n")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for li in soup.find_all("li"):
        li.insert(0, "- ")
        li.insert_after("\n")
    for block in soup.find_all(_BLOCK_TAGS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    text = "\n".join(line.strip() for line in soup.get_text().split("\n"))
    if title and not any(h.name == "h1" for h in headings):
        text = f"# {title}\n\n{text}"
    return text


# --- DOCX ----------------------------------------------------------------------------------------------

_HEADING_STYLE = re.compile(r"^(?:heading|标题|標題)\s*([1-6])$", re.I)


def _docx_paragraph(par) -> str:
    """One Word paragraph as a Markdown-ish line ('#'*N for Heading N, '- ' for list styles)."""
    text = par.text.strip()
    if not text:
        return ""
    style = (par.style.name if par.style is not None else "") or ""
    match = _HEADING_STYLE.match(style.strip())
    if match:
        return "#" * int(match.group(1)) + " " + " ".join(text.split())
    if style.strip().lower() == "title":
        return "# " + " ".join(text.split())
    if style.lower().startswith("list"):
        return "- " + text
    return text


def _docx_table(table) -> str:
    """A Word table as 'a | b' lines, merged cells counted once."""
    lines = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def _docx_text(data: bytes, path: Path) -> str:
    """Extract a .docx body in reading order (paragraphs and tables interleaved)."""
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise InputError(path, "not a .docx file: an encrypted or legacy Word (.doc) file",
                         hint="remove the password or save it as .docx")
    try:
        import docx
        from docx.table import Table

        document = docx.Document(io.BytesIO(data))
        blocks = [(_docx_table(b) if isinstance(b, Table) else _docx_paragraph(b))
                  for b in document.iter_inner_content()]
    except InputError:
        raise
    except Exception as err:  # python-docx raises zipfile, KeyError, lxml and ValueError variants
        raise InputError(path, f"corrupt .docx file ({type(err).__name__}: {err})") from None
    return "\n\n".join(b for b in blocks if b)


# --- PDF -----------------------------------------------------------------------------------------------

PdfLine = tuple[str, float]  # a text line and its dominant font size (points)
_LIST_ITEM = re.compile(r"^([-•*·▪–]\s|\d+[.)]\s|[（(]?[一二三四五六七八九十]+[、.)）])")
_CJK_CHAR = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")


def _pdf_page_lines(page) -> list[PdfLine]:
    """A page's text lines, each with the font size that most of its characters use."""
    import math

    lines: list[tuple[list[str], dict[float, int]]] = [([], {})]

    def visit(text: str, cm, tm, font, size: float) -> None:
        scale = (math.hypot(tm[2], tm[3]) * math.hypot(cm[2], cm[3])) or 1.0
        for i, part in enumerate(text.split("\n")):
            if i:
                lines.append(([], {}))
            lines[-1][0].append(part)
            if part.strip():
                sizes = lines[-1][1]
                key = round(float(size) * scale, 1)
                sizes[key] = sizes.get(key, 0) + len(part.strip())

    page.extract_text(visitor_text=visit)
    return [("".join(parts).strip(), max(sizes, key=sizes.__getitem__) if sizes else 0.0)
            for parts, sizes in lines if "".join(parts).strip()]


def _heading_levels(pages: list[list[PdfLine]]) -> dict[float, int]:
    """Map font sizes clearly larger than the body size to heading levels 1-6 (largest first)."""
    weight: dict[float, int] = {}
    for text, size in (line for page in pages for line in page):
        weight[size] = weight.get(size, 0) + len(text)
    if not weight:
        return {}
    body = max(weight, key=weight.__getitem__)
    lines = [line for page in pages for line in page]
    big = [(t, s) for t, s in lines if s >= body * 1.08 and len(t) <= 150]
    if not big or len(big) > 0.3 * len(lines):
        return {}  # no size hierarchy, or too much large text to be headings
    return {size: min(i + 1, 6) for i, size in enumerate(sorted({s for _, s in big}, reverse=True))}


def _join(a: str, b: str) -> str:
    """Join a wrapped line to the next: no space between CJK characters or after a hyphenated break."""
    if _CJK_CHAR.match(a[-1]) and _CJK_CHAR.match(b[0]):
        return a + b
    return a + b if a.endswith("-") and a[-2:-1].isalpha() else a + " " + b


def _pdf_markdown(pages: list[list[PdfLine]]) -> str:
    """Rebuild Markdown-ish text: large-font lines become '#' headings, wrapped body lines become paragraphs."""
    levels = _heading_levels(pages)
    lengths = sorted(len(t) for page in pages for t, s in page if s not in levels)
    full = lengths[int(0.9 * (len(lengths) - 1))] if lengths else 0
    blocks: list[str] = []
    for page in pages:
        para: str | None = None
        last_len = 0
        for text, size in page:
            if size in levels:
                blocks.extend([para] if para else [])
                para = None
                blocks.append("#" * levels[size] + " " + text)
            elif para is not None and last_len >= 0.75 * full and not _LIST_ITEM.match(text):
                para = _join(para, text)
            else:
                blocks.extend([para] if para else [])
                para = text
            last_len = len(text)
        blocks.extend([para] if para else [])
    return "\n\n".join(blocks)


@contextlib.contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """Silence pypdf's own log lines (repairs it made, encodings it guessed) while we read one file."""
    logger = logging.getLogger("pypdf")
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


def _pdf_text(data: bytes, path: Path) -> str:
    """Extract every page's text with pypdf; encrypted, corrupt and image-only PDFs are InputErrors."""
    from pypdf import PasswordType, PdfReader

    if b"%PDF-" not in data[:1024]:
        raise InputError(path, "corrupt PDF (no %PDF header: not a PDF file)")
    try:
        with _quiet_pypdf():
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
                raise InputError(path, "encrypted PDF (a password is needed to open it)")
            pages = [_pdf_page_lines(page) for page in reader.pages]
    except InputError:
        raise
    except Exception as err:  # pypdf raises PdfReadError, DependencyError and plain parsing errors
        name = type(err).__name__
        if "Decrypt" in name or "Dependency" in name or "Password" in name:
            raise InputError(path, f"encrypted PDF ({err})") from None
        raise InputError(path, f"corrupt PDF ({name}: {err})") from None
    text = _pdf_markdown(pages)
    if not text.strip():
        raise InputError(path, NO_PDF_TEXT)
    return text


# --- JSON / JSONL / CSV records ------------------------------------------------------------------------

def _flatten(value: object, prefix: str = "") -> Iterable[str]:
    """Yield 'key: value' lines for a JSON value, nested keys joined with dots."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, inner in enumerate(value):
            yield from _flatten(inner, f"{prefix}[{i}]")
    elif isinstance(value, list):
        if value:
            yield f"{prefix}: " + ", ".join(str(v) for v in value) if prefix else ", ".join(map(str, value))
    elif value is not None and str(value).strip():
        yield f"{prefix}: {value}" if prefix else str(value)


def _record(value: object) -> str:
    """One record as a block of 'key: value' lines."""
    return "\n".join(line for line in _flatten(value) if line.strip())


def _json_text(text: str, path: Path) -> str:
    """A JSON file: a top-level list is one record per item, anything else one record."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(path, f"invalid JSON: {err.msg} (column {err.colno})", row=err.lineno) from None
    if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), list):
        value = next(iter(value.values()))  # {"faqs": [...]}: the list holds the records
    items = value if isinstance(value, list) else [value]
    return "\n\n".join(r for r in map(_record, items) if r)


def _jsonl_text(text: str, path: Path) -> str:
    """A JSON Lines file: one record per non-blank line; a bad line names its row."""
    records = []
    for row, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(_record(json.loads(line)))
        except json.JSONDecodeError as err:
            raise InputError(path, f"invalid JSON: {err.msg} (column {err.colno})", row=row) from None
    return "\n\n".join(r for r in records if r)


def _csv_text(text: str, path: Path) -> str:
    """A CSV file with a header row: one 'column: value' block per row (delimiter sniffed)."""
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(reader, [])
        header = [h.strip() or f"column {i + 1}" for i, h in enumerate(header)]
        records = []
        for row in reader:
            pairs = [(header[i] if i < len(header) else f"column {i + 1}", v.strip()) for i, v in enumerate(row)]
            block = "\n".join(f"{k}: {v}" for k, v in pairs if v)
            if block:
                records.append(block)
    except csv.Error as err:
        raise InputError(path, f"invalid CSV: {err}", row=reader.line_num) from None
    return "\n\n".join(records)


# --- entry point ---------------------------------------------------------------------------------------

_TEXT_CONVERTERS: dict[str, Callable[[str, Path], str]] = {
    "text": lambda text, path: text,
    "markdown": lambda text, path: _markdown(text),
    "html": lambda text, path: html_to_text(text),
    "json": _json_text,
    "jsonl": _jsonl_text,
    "csv": _csv_text,
}


def load_document(path: Path, *, max_bytes: int) -> LoadedDocument:
    """Read and convert one supported file; raise InputError naming the problem for any bad file."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(path, f"unsupported file type {path.suffix or '(no extension)'!r}")
    data = read_bytes(path, max_bytes)
    encoding: str | None = None
    if fmt == "pdf":
        text = _pdf_text(data, path)
    elif fmt == "docx":
        text = _docx_text(data, path)
    else:
        text, encoding = (_decode_html if fmt == "html" else decode_text)(data, path)
        text = _TEXT_CONVERTERS[fmt](_normalise_newlines(text), path)
    text = _tidy(_normalise_newlines(text))
    if not text:
        reason = {"docx": "no text in document", "pdf": NO_PDF_TEXT}.get(fmt, "empty file (only whitespace)")
        if fmt in ("json", "jsonl", "csv"):
            reason = "no records with values"
        raise InputError(path, reason)
    return LoadedDocument(path=path, text=text, format=fmt, encoding=encoding)
