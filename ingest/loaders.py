"""Load one document file into Markdown-ish text: headings as '#' lines, tables as Markdown tables, records as blocks.

Formats with an origin finer than the file keep it as segments: a PDF page or image frame (`ingest.pdf`, OCR
in `ingest.ocr`), a CSV/JSONL row. Every problem with a file (unreadable, too large, empty, binary with a
text extension, corrupt, encrypted, no extractable text, a bad JSON line, a per-file limit in `LoadLimits`)
raises `ragtune.errors.InputError(path, reason)`; nothing else escapes for bad input. Heavy parsers
(BeautifulSoup, pypdf, pdfplumber, python-docx, RapidOCR) are imported only when their format is loaded.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import io
import json
import logging
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ragtune.errors import ConfigError, InputError

from .encoding import BINARY_REASON, MIN_PRINTABLE_RATIO, decode_text, printable_ratio
from .tables import markdown_table

# Bumped whenever a loader's output for the same file changes (a fix to HTML navigation, fenced
# <pre> blocks, OCR…): it is part of every document's split tag, so the next `ingest` re-reads
# and re-splits documents indexed by an older loader instead of keeping their stale chunks.
LOADER_VERSION = 3  # 3: PDF running headers, footers and contents pages dropped

MB = 1024 * 1024
FORMATS: dict[str, str] = {
    ".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html",
    ".pdf": "pdf", ".docx": "docx", ".json": "json", ".jsonl": "jsonl", ".csv": "csv",
    ".png": "image", ".jpg": "image", ".jpeg": "image", ".tif": "image", ".tiff": "image",
}
NO_PDF_TEXT = "no extractable text (scanned?)"  # also ingest.pdf.NO_PDF_TEXT


@dataclass(frozen=True)
class Segment:
    """A part of a document with a known origin: a PDF page or image frame, a record row, or the whole text.

    `page` is 1-based; `row_start`/`row_end` are the file's line/row numbers (a CSV header is row 1);
    `ocr` marks text recognised from an image rather than read from a text layer.
    """

    text: str
    page: int | None = None
    row_start: int | None = None
    row_end: int | None = None
    ocr: bool = False


@dataclass
class LoadedDocument:
    """A document's text (Markdown-ish), its format name, the text encoding detected (None for binary
    formats) and, where the format has them, its segments (pages, rows) in order."""

    path: Path
    text: str
    format: str
    encoding: str | None
    segments: list[Segment] = field(default_factory=list)

    def parts(self) -> list[Segment]:
        """The segments to split, or the whole text as one segment when the format has none."""
        return self.segments or [Segment(self.text)]

    @property
    def ocr_pages(self) -> int:
        """How many pages (or image frames) were read by OCR."""
        return sum(1 for s in self.segments if s.ocr)


@dataclass(frozen=True)
class LoadLimits:
    """Per-file limits: bytes, wall time, HTML nesting depth, records (rows) and OCR pages / time.

    Each breach is an InputError naming the file and the setting, so one bad file fails alone.
    """

    max_bytes: int = 50 * MB
    max_seconds: float = 600.0
    max_html_depth: int = 256
    max_rows: int = 100_000
    ocr: bool = True
    ocr_max_pages: int = 50
    ocr_timeout_s: float = 300.0
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        """Reject limits that would refuse every file, naming the setting."""
        for name in ("max_bytes", "max_seconds", "max_html_depth", "max_rows", "ocr_max_pages", "ocr_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(name, value, "must be a positive number")

    def check_time(self, path: Path, where: str = "") -> None:
        """Raise when loading this file has taken longer than `max_seconds` (RAGTUNE_MAX_FILE_SECONDS)."""
        spent = time.monotonic() - self.started
        if spent > self.max_seconds:
            at = f" at {where}" if where else ""
            raise InputError(path, f"took longer than {self.max_seconds:g} s to load (stopped{at}; "
                                   "RAGTUNE_MAX_FILE_SECONDS)")


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
    """A Word table as a Markdown table (first row as header), merged cells counted once."""
    rows = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        rows.append(cells)
    return markdown_table(rows)


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


def _too_many_rows(path: Path, limits: LoadLimits, row: int) -> InputError:
    return InputError(path, f"more than {limits.max_rows} records, over the limit (RAGTUNE_MAX_ROWS)", row=row)


def _jsonl_segments(text: str, path: Path, limits: LoadLimits) -> list[Segment]:
    """A JSON Lines file: one record per non-blank line, each a segment with its row; a bad line names its row."""
    records: list[Segment] = []
    for row, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if len(records) >= limits.max_rows:
            raise _too_many_rows(path, limits, row)
        if row % 1000 == 0:
            limits.check_time(path, f"row {row}")
        try:
            record = _record(json.loads(line))
        except json.JSONDecodeError as err:
            raise InputError(path, f"invalid JSON: {err.msg} (column {err.colno})", row=row) from None
        if record:
            records.append(Segment(record, row_start=row, row_end=row))
    return records


def _csv_segments(text: str, path: Path, limits: LoadLimits) -> list[Segment]:
    """A CSV file with a header row: one 'column: value' block per row (delimiter sniffed), rows kept.

    Row numbers are the file's CSV rows as a spreadsheet shows them: the header is row 1.
    """
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(reader, [])
        header = [h.strip() or f"column {i + 1}" for i, h in enumerate(header)]
        records: list[Segment] = []
        for number, row in enumerate(reader, start=2):
            if number - 1 > limits.max_rows:
                raise _too_many_rows(path, limits, number)
            if number % 1000 == 0:
                limits.check_time(path, f"row {number}")
            pairs = [(header[i] if i < len(header) else f"column {i + 1}", v.strip()) for i, v in enumerate(row)]
            block = "\n".join(f"{k}: {v}" for k, v in pairs if v)
            if block:
                records.append(Segment(block, row_start=number, row_end=number))
    except csv.Error as err:
        raise InputError(path, f"invalid CSV: {err}", row=reader.line_num) from None
    return records


def _html_text(text: str, path: Path, limits: LoadLimits) -> str:
    """HTML's main content (see `ingest.html`); too deep or navigation-only pages are InputErrors."""
    from .html import NavigationOnly, TooDeep, html_to_text

    try:
        return html_to_text(text, max_depth=limits.max_html_depth)
    except (TooDeep, NavigationOnly) as err:
        raise InputError(path, str(err)) from None


# --- entry point ---------------------------------------------------------------------------------------

_TEXT_CONVERTERS: dict[str, Callable[[str, Path, LoadLimits], str | list[Segment]]] = {
    "text": lambda text, path, limits: text,
    "markdown": lambda text, path, limits: _markdown(text),
    "html": _html_text,
    "json": lambda text, path, limits: _json_text(text, path),
    "jsonl": _jsonl_segments,
    "csv": _csv_segments,
}


def _clean_segments(segments: list[Segment]) -> list[Segment]:
    """Segments with tidy text; empty ones dropped."""
    out = []
    for seg in segments:
        text = _tidy(_normalise_newlines(seg.text))
        if text:
            out.append(dataclasses.replace(seg, text=text))
    return out


def load_document(path: Path, *, max_bytes: int | None = None, limits: LoadLimits | None = None) -> LoadedDocument:
    """Read and convert one supported file; raise InputError naming the problem for any bad file.

    `limits` bounds bytes, time, HTML depth, records and OCR (defaults: `LoadLimits()`); `max_bytes`
    overrides its byte limit (the older keyword).
    """
    path = Path(path)
    limits = limits or LoadLimits()
    if max_bytes is not None:
        limits = dataclasses.replace(limits, max_bytes=max_bytes)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(path, f"unsupported file type {path.suffix or '(no extension)'!r}")
    data = read_bytes(path, limits.max_bytes)
    encoding: str | None = None
    if fmt in ("pdf", "image"):
        from .pdf import image_segments, pdf_segments

        result: str | list[Segment] = (pdf_segments if fmt == "pdf" else image_segments)(data, path, limits)
    elif fmt == "docx":
        result = _docx_text(data, path)
    else:
        text, encoding = (_decode_html if fmt == "html" else decode_text)(data, path)
        result = _TEXT_CONVERTERS[fmt](_normalise_newlines(text), path, limits)
    limits.check_time(path)
    segments = _clean_segments(result) if isinstance(result, list) else []
    text = "\n\n".join(s.text for s in segments) if isinstance(result, list) else _tidy(_normalise_newlines(result))
    if not text:
        reason = {"docx": "no text in document", "pdf": NO_PDF_TEXT}.get(fmt, "empty file (only whitespace)")
        if fmt in ("json", "jsonl", "csv"):
            reason = "no records with values"
        raise InputError(path, reason)
    return LoadedDocument(path=path, text=text, format=fmt, encoding=encoding, segments=segments)
