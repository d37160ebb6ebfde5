"""PDF pages to Markdown-ish segments: text layer with font-size headings, tables via pdfplumber, OCR where needed.

Each page becomes one `Segment` carrying its 1-based page number, so every chunk can be cited by page.
- Text: pypdf's text layer; lines set clearly larger than the body size become '#' headings;
  running headers, footers (page numbers) and table-of-contents pages are dropped.
- Tables: pdfplumber finds ruled tables on pages with text; each becomes a Markdown table in place of the
  text lines inside its bounding box (pypdf would give its cells as loose words).
- OCR: a page whose text layer is empty or garbage (mostly replacement characters, `(cid:N)` glyph codes or
  symbols) is rendered with pypdfium2 and read by OCR (`ingest.ocr`), its segment marked `ocr=True`.
Image files (.png .jpg .jpeg .tif .tiff, every TIFF frame a page) are OCR'd the same way.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path

from ragtune.errors import InputError

from .ocr import NO_OCR_TEXT, check_page_limit, ocr_images
from .tables import markdown_table

log = logging.getLogger(__name__)

NO_PDF_TEXT = "no extractable text (scanned?)"
OCR_DPI = 150  # render resolution for OCR: PP-OCR reads 10-pt text reliably from 150 dpi
PdfLine = tuple[str, float, float]  # a text line, its dominant font size (points) and baseline y (PDF units)
_LIST_ITEM = re.compile(r"^([-•*·▪–]\s|\d+[.)]\s|[（(]?[一二三四五六七八九十]+[、.)）])")
_CJK_CHAR = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
_CID = re.compile(r"\(cid:\d+\)")
TABLE_MARK = "\x00table\x00"


def _page_lines(page) -> list[PdfLine]:
    """A page's text lines, each with the font size most of its characters use and its baseline y."""
    lines: list[tuple[list[str], dict[float, int], list[float]]] = [([], {}, [])]

    def visit(text: str, cm, tm, font, size: float) -> None:
        scale = (math.hypot(tm[2], tm[3]) * math.hypot(cm[2], cm[3])) or 1.0
        y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
        for i, part in enumerate(text.split("\n")):
            if i:
                lines.append(([], {}, []))
            lines[-1][0].append(part)
            if part.strip():
                sizes = lines[-1][1]
                key = round(float(size) * scale, 1)
                sizes[key] = sizes.get(key, 0) + len(part.strip())
                lines[-1][2].append(float(y))

    page.extract_text(visitor_text=visit)
    return [("".join(parts).strip(), max(sizes, key=sizes.__getitem__) if sizes else 0.0, ys[0] if ys else 0.0)
            for parts, sizes, ys in lines if "".join(parts).strip()]


_DIGITS = re.compile(r"\d+")
_ROMAN_PAGE = re.compile(r"^[ivxlcdm]{1,7}$", re.I)
# A table-of-contents entry: a title, a dot leader, a page number ("3.4. /bin ........ 5").
_TOC_LINE = re.compile(r"(?:\.\s?){4,}\s*(?:\d+|[ivxlcdm]+)\s*$", re.I)
# A top or bottom line repeated on this many pages (and on a tenth of them) is a running header
# or footer; fewer is more likely a table header that a page break repeated.
RUNNING_MIN_PAGES = 3


def _running_key(line: PdfLine) -> tuple[str, int]:
    """What a running header or footer keeps from page to page: its text with the page
    number generalised ("The Root Filesystem", "Page # of #", roman "iii") and its height."""
    text = line[0].strip()
    text = "#" if _ROMAN_PAGE.fullmatch(text) else _DIGITS.sub("#", text)
    return text, round(line[2])


def drop_page_furniture(pages: list[list[PdfLine]]) -> tuple[list[list[PdfLine]], set[int]]:
    """The pages without running headers and footers and without the lines of
    table-of-contents pages, and the (0-based) indices of those contents pages.

    A running header or footer is one of a page's top or bottom two lines whose text, numbers
    generalised, recurs at the same height on `RUNNING_MIN_PAGES` pages and on a tenth of all
    pages (the chapter title and the page number set on every page), unless that would leave
    the page with no text (one line per page, alike but for a number). A table-of-contents page
    is one where most lines end in a dot leader and a page number. Left in (the FHS 3.0 PDF),
    "The Root Filesystem" and "15" were glued into every chunk that began on a new page, and
    the contents pages, mostly dots, were taken for garbage text layers and sent to OCR.
    pypdf and pdfplumber, which read the pages here, have no such filter. A single dot-leader
    line in a body page ("Annual leave ........ 27") is kept."""
    counts: dict[tuple[str, int], int] = {}
    edges: list[set[int]] = []
    for lines in pages:
        order = sorted(range(len(lines)), key=lambda i: lines[i][2])
        edge = set(order[:2] + order[-2:])
        edges.append(edge)
        for key in {_running_key(lines[i]) for i in edge}:
            counts[key] = counts.get(key, 0) + 1
    least = max(RUNNING_MIN_PAGES, math.ceil(0.1 * len(pages)))
    out, contents = [], set()
    for index, (lines, edge) in enumerate(zip(pages, edges, strict=True)):
        kept = [line for i, line in enumerate(lines)
                if not (i in edge and counts[_running_key(line)] >= least)] or lines
        toc = [_TOC_LINE.search(text) is not None for text, _, _ in kept]
        if kept and sum(toc) > 0.5 * len(kept):
            kept = [line for line, entry in zip(kept, toc, strict=True) if not entry]
            contents.add(index)
        out.append(kept)
    return out, contents


def needs_ocr(lines: list[PdfLine]) -> bool:
    """True when a page's text layer is empty or garbage, so only OCR can read it."""
    text = "".join("".join(t for t, _, _ in lines).split())
    if len(text) < 8:
        return True
    bad = text.count("\ufffd") + 6 * len(_CID.findall(text))
    wordish = sum(ch.isalnum() for ch in text)
    return bad > 0.2 * len(text) or wordish < 0.4 * len(text)


def _heading_levels(pages: list[list[PdfLine]]) -> dict[float, int]:
    """Map font sizes clearly larger than the body size to heading levels 1-6 (largest first)."""
    weight: dict[float, int] = {}
    for text, size, _ in (line for page in pages for line in page):
        weight[size] = weight.get(size, 0) + len(text)
    if not weight:
        return {}
    body = max(weight, key=weight.__getitem__)
    lines = [line for page in pages for line in page]
    big = [(t, s) for t, s, _ in lines if s >= body * 1.08 and len(t) <= 150]
    if not big or len(big) > 0.3 * len(lines):
        return {}  # no size hierarchy, or too much large text to be headings
    return {size: min(i + 1, 6) for i, size in enumerate(sorted({s for _, s in big}, reverse=True))}


def _join(a: str, b: str) -> str:
    """Join a wrapped line to the next: no space between CJK characters or after a hyphenated break."""
    if _CJK_CHAR.match(a[-1]) and _CJK_CHAR.match(b[0]):
        return a + b
    return a + b if a.endswith("-") and a[-2:-1].isalpha() else a + " " + b


def _wraps(previous: tuple[float, float], size: float, y: float) -> bool:
    """Whether a line of font `size` at baseline `y` continues the previous line of the same size
    (the next line down, at most 1.5 line heights below): "3.13. /opt : Add-on application
    software" + "packages" is one heading, not a section and a subsection."""
    return previous[0] == size and 0 < previous[1] - y <= 1.5 * size


def _page_markdown(page: list[PdfLine], levels: dict[float, int], full: int, tables: list[str]) -> str:
    """One page as Markdown-ish text: large-font lines as '#' headings, wrapped lines joined, tables placed."""
    blocks: list[str] = []
    para: str | None = None
    last_len, last = 0, (0.0, 0.0)  # the previous line's size and baseline
    tables = list(tables)
    for text, size, y in page:
        if text == TABLE_MARK:
            blocks.extend([para] if para else [])
            para = None
            blocks.append(tables.pop(0))
        elif size in levels and para is None and blocks and _wraps(last, size, y) \
                and blocks[-1].startswith("#" * levels[size] + " "):
            blocks[-1] = _join(blocks[-1], text)  # a heading wrapped onto a second line
        elif size in levels:
            blocks.extend([para] if para else [])
            para = None
            blocks.append("#" * levels[size] + " " + text)
        elif para is not None and last_len >= 0.75 * full and not _LIST_ITEM.match(text):
            para = _join(para, text)
        else:
            blocks.extend([para] if para else [])
            para = text
        last_len, last = len(text), (size, y)
    blocks.extend([para] if para else [])
    return "\n\n".join(blocks + tables)


def _place_tables(lines: list[PdfLine], found: list[tuple[float, float, str]]) -> list[PdfLine]:
    """Replace the text lines inside each table's vertical extent (PDF y, bottom-up) by a table marker."""
    out: list[PdfLine] = []
    placed = [False] * len(found)
    for line in lines:
        inside = next((i for i, (low, high, _) in enumerate(found) if low - 2 <= line[2] <= high + 2), None)
        if inside is None:
            out.append(line)
        elif not placed[inside]:
            placed[inside] = True
            out.append((TABLE_MARK, 0.0, line[2]))
    return out


def _tables(data: bytes, pages: list[int]) -> dict[int, list[tuple[float, float, str]]]:
    """Ruled tables pdfplumber finds on the given 0-based pages: page -> [(y low, y high, markdown)]."""
    import pdfplumber

    found: dict[int, list[tuple[float, float, str]]] = {}
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        for index in pages:
            page = pdf.pages[index]
            for table in page.find_tables():
                rows = table.extract()
                if len(rows) < 2 or max(len(r) for r in rows) < 2:
                    continue
                x0, top, x1, bottom = table.bbox
                text = markdown_table([[c or "" for c in row] for row in rows])
                if text:
                    found.setdefault(index, []).append((page.height - bottom, page.height - top, text))
            page.close()
    return found


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Silence pypdf's / pdfminer's own log lines (repairs, guessed encodings) while we read one file."""
    loggers = [logging.getLogger(n) for n in names]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, before, strict=True):
            lg.setLevel(level)


def _read_pages(data: bytes, path: Path) -> list[list[PdfLine]]:
    """Every page's text lines with pypdf; encrypted and corrupt PDFs are InputErrors."""
    from pypdf import PasswordType, PdfReader

    if b"%PDF-" not in data[:1024]:
        raise InputError(path, "corrupt PDF (no %PDF header: not a PDF file)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise InputError(path, "encrypted PDF (a password is needed to open it)")
        return [_page_lines(page) for page in reader.pages]
    except InputError:
        raise
    except Exception as err:  # pypdf raises PdfReadError, DependencyError and plain parsing errors
        name = type(err).__name__
        if "Decrypt" in name or "Dependency" in name or "Password" in name:
            raise InputError(path, f"encrypted PDF ({err})") from None
        raise InputError(path, f"corrupt PDF ({name}: {err})") from None


def _render(data: bytes, path: Path, index: int):
    """A loader that renders one page (0-based) to an RGB array at OCR_DPI with pypdfium2."""
    def load():
        import numpy as np
        import pypdfium2 as pdfium

        pdf = pdfium.PdfDocument(data)
        try:
            image = pdf[index].render(scale=OCR_DPI / 72).to_pil().convert("RGB")
        finally:
            pdf.close()
        return np.asarray(image)
    return load


def pdf_segments(data: bytes, path: Path, limits) -> list:
    """A PDF as one Segment per page with text; image-only pages OCR'd within `limits`."""
    from .loaders import Segment

    with _quiet("pypdf", "pdfminer"):
        pages, contents = drop_page_furniture(_read_pages(data, path))
        scanned = [i for i, lines in enumerate(pages) if i not in contents and needs_ocr(lines)]
        skipped = set(scanned) | contents
        text_pages = [i for i in range(len(pages)) if i not in skipped]
        tables = _tables(data, text_pages) if text_pages else {}
    limits.check_time(path, "the text layer")
    for index, found in tables.items():
        pages[index] = _place_tables(pages[index], found)
    levels = _heading_levels([pages[i] for i in text_pages])
    lengths = sorted(len(t) for i in text_pages for t, s, _ in pages[i] if s not in levels and t != TABLE_MARK)
    full = lengths[int(0.9 * (len(lengths) - 1))] if lengths else 0
    texts = {i + 1: _page_markdown(pages[i], levels, full, [t for _, _, t in tables.get(i, [])])
             for i in text_pages}
    ocr_text: dict[int, str] = {}
    if scanned and limits.ocr:
        check_page_limit(path, len(scanned), limits.ocr_max_pages)
        ocr_text = ocr_images(path, [(i + 1, _render(data, path, i)) for i in scanned], total=len(pages),
                              timeout_s=min(limits.ocr_timeout_s, limits.max_seconds))
    segments = []
    for number in range(1, len(pages) + 1):
        if ocr_text.get(number, "").strip():
            segments.append(Segment(ocr_text[number], page=number, ocr=True))
        elif texts.get(number, "").strip():
            segments.append(Segment(texts[number], page=number))
        elif pages[number - 1]:
            segments.append(Segment("\n".join(t for t, _, _ in pages[number - 1]), page=number))
    if not segments:
        raise InputError(path, NO_PDF_TEXT if limits.ocr else NO_PDF_TEXT + "; OCR is off (RAGTUNE_OCR)")
    return segments


def image_segments(data: bytes, path: Path, limits) -> list:
    """An image file (every TIFF frame a page) read by OCR; InputError when it holds no text."""
    import numpy as np
    from PIL import Image, ImageSequence, UnidentifiedImageError

    from .loaders import Segment

    if not limits.ocr:
        raise InputError(path, "an image needs OCR, which is off (RAGTUNE_OCR)")
    try:
        image = Image.open(io.BytesIO(data))
        frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise InputError(path, f"corrupt image ({type(err).__name__}: {err})") from None
    check_page_limit(path, len(frames), limits.ocr_max_pages)
    text = ocr_images(path, [(n, (lambda f=f: f)) for n, f in enumerate(frames, start=1)], total=len(frames),
                      timeout_s=min(limits.ocr_timeout_s, limits.max_seconds))
    multi = len(frames) > 1
    segments = [Segment(t, page=n if multi else None, ocr=True) for n, t in sorted(text.items()) if t.strip()]
    if not segments:
        raise InputError(path, NO_OCR_TEXT)
    return segments
