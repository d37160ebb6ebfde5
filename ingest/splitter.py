"""Split a loaded document into chunks: heading sections first, then CJK-aware recursive character splitting.

Markdown-ish text (Markdown, HTML, DOCX and PDF after loading) goes through LangChain's MarkdownHeaderTextSplitter,
so each chunk carries its heading path as `section` ("H1 > H2 > H3"); every section's text then goes through
RecursiveCharacterTextSplitter with separators that know Chinese sentence punctuation, kept on the end of the
sentence it closes ("。" stays with its sentence, never starts the next chunk).

Sizes are measured in character cells: a CJK character (Han, kana, Hangul, CJK and fullwidth punctuation)
counts `cjk_width` (2 by default: a double-width cell on a terminal) and every other character 1. A 500-cell
chunk is then about 500 English characters (~110 tokens) or 250 Chinese characters (~250 tokens), so chunks
carry comparable content in both languages and stay inside a 256-token embedder window.

Overlap follows LangChain: the next chunk starts with the last whole pieces (sentences, clauses) of the previous
one that fit in `chunk_overlap`; a piece longer than that is never cut to make an overlap. Whitespace is
normalised (runs of spaces collapsed, lines stripped, at most one blank line), code indentation included.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from ragtune.errors import ConfigError

from .loaders import LoadedDocument

SEPARATORS: tuple[str, ...] = (
    "\n\n", "\n", "。", "！", "？", "；", ". ", "! ", "? ", "; ", "，", ", ", " ", "",
)
SECTION_JOIN = " > "
HEADED_FORMATS = frozenset({"markdown", "html", "docx", "pdf"})
_HEADERS = [("#" * n, f"h{n}") for n in range(1, 7)]


@dataclass
class SplitConfig:
    """Chunking settings in character cells (CJK wide characters count `cjk_width`).

    `min_chunk`: a chunk narrower than this (a fragment such as "Yes." or a chapter title alone) is
    merged into its neighbour instead of standing alone in the index (0 turns merging off).
    """

    chunk_size: int = 500
    chunk_overlap: int = 60
    cjk_width: int = 2
    min_chunk: int = 0

    def __post_init__(self) -> None:
        """Reject sizes that cannot produce sensible chunks, naming the flag and value."""
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 10:
            raise ConfigError("chunk_size", self.chunk_size, "must be an integer of at least 10 characters")
        if isinstance(self.chunk_overlap, bool) or not isinstance(self.chunk_overlap, int) or self.chunk_overlap < 0:
            raise ConfigError("chunk_overlap", self.chunk_overlap, "must be a non-negative integer")
        if self.chunk_overlap >= self.chunk_size:
            raise ConfigError("chunk_overlap", self.chunk_overlap,
                              f"must be smaller than chunk_size ({self.chunk_size})")
        if self.cjk_width not in (1, 2):
            raise ConfigError("cjk_width", self.cjk_width, "must be 1 (plain characters) or 2 (character cells)")
        if isinstance(self.min_chunk, bool) or not isinstance(self.min_chunk, int) \
                or not 0 <= self.min_chunk < self.chunk_size // 2:
            raise ConfigError("min_chunk_chars", self.min_chunk,
                              f"must be an integer from 0 to below half of chunk_size ({self.chunk_size})")


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it is stored: its text, heading path, 0-based position and where it came from.

    `page` is the 1-based PDF page (or image frame) the chunk starts on, `row_start`/`row_end` the
    CSV/JSONL rows it holds, `ocr` whether its text was recognised from an image.
    """

    text: str
    section: str
    position: int
    page: int | None = None
    row_start: int | None = None
    row_end: int | None = None
    ocr: bool = False


# CJK blocks (East Asian wide/fullwidth, without emoji and symbols): Hangul Jamo, CJK radicals/punctuation, kana, CJK ideographs (BMP and
# supplementary planes), Yi, Hangul syllables, compatibility ideographs, vertical/fullwidth forms.
_WIDE = re.compile("[\u1100-\u115f\u2e80-\u303e\u3041-\u33ff\u3400-\u4dbf\u4e00-\u9fff\ua000-\ua4cf"
                   "\uac00-\ud7a3\uf900-\ufaff\ufe10-\ufe19\ufe30-\ufe6f\uff00-\uff60\uffe0-\uffe6"
                   "\U00020000-\U0003fffd]")


def text_width(text: str, cjk_width: int = 2) -> int:
    """Length of `text` in character cells: wide (CJK) characters count `cjk_width`, others 1."""
    if cjk_width == 1 or text.isascii():
        return len(text)
    return len(text) + (cjk_width - 1) * len(_WIDE.findall(text))


_SPACES = re.compile(r"[ \t\f\v\u00a0\u3000]+")
_BLANKS = re.compile(r"\n{3,}")


def normalise_whitespace(text: str) -> str:
    """Collapse runs of spaces, strip every line and keep at most one blank line between paragraphs."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


_ATX = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^(```|~~~)")
Heading = tuple[int, str]  # (level, title)


def _heading_stack(text: str, stack: list[Heading]) -> list[Heading]:
    """The heading path in force at the end of `text`, starting from `stack` (code fences skipped)."""
    stack = list(stack)
    fenced = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _ATX.match(line)
        if match:
            level = len(match.group(1))
            stack = [h for h in stack if h[0] < level] + [(level, match.group(2))]
    return stack


def _sections(text: str, fmt: str, context: list[Heading]) -> list[tuple[str, str]]:
    """Split headed formats at Markdown headings into (heading path, body) pieces, in document order.

    `context` is the heading path in force where this text starts (a PDF page continues the
    headings of the page before): it is replayed as heading lines so the splitter knows it.
    """
    if fmt not in HEADED_FORMATS:
        return [("", text)]
    from langchain_text_splitters import MarkdownHeaderTextSplitter

    prefix = "".join(f"{'#' * level} {title}\n" for level, title in context)
    splitter = MarkdownHeaderTextSplitter(_HEADERS, strip_headers=True, return_each_line=True)
    pieces: list[tuple[str, str]] = []
    for block in splitter.split_text(prefix + text):
        section = SECTION_JOIN.join(
            v for _, key in _HEADERS if (v := " ".join(str(block.metadata.get(key, "")).split()))
        )
        if pieces and pieces[-1][0] == section:  # paragraphs of one section, joined back with a blank line
            pieces[-1] = (section, pieces[-1][1] + "\n\n" + block.page_content)
        else:
            pieces.append((section, block.page_content))
    if not pieces and not context:
        return [("", text)]  # headings only: keep them as text rather than lose the document
    return pieces


def _char_splitter(cfg: SplitConfig):
    """The RecursiveCharacterTextSplitter configured for CJK + Latin sentence boundaries."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter(
        separators=list(SEPARATORS),
        keep_separator="end",
        is_separator_regex=False,
        chunk_size=cfg.chunk_size,
        chunk_overlap=cfg.chunk_overlap,
        length_function=lambda s: text_width(s, cfg.cjk_width),
        strip_whitespace=True,
    )


def _table_chunks(lines: list[str], cfg: SplitConfig) -> list[str]:
    """A Markdown table in pieces that fit `chunk_size`, each starting with the header and separator.

    A row too wide to fit with the header still gets a chunk of its own (header + that row): a table
    row is never cut, so a chunk never holds half a row without its column names.
    """
    head = lines[:2]
    budget = cfg.chunk_size - text_width("\n".join(head), cfg.cjk_width) - 1
    pieces: list[list[str]] = []
    used = budget + 1
    for row in lines[2:]:
        width = text_width(row, cfg.cjk_width) + 1
        if pieces and used + width <= budget:
            pieces[-1].append(row)
            used += width
        else:
            pieces.append([row])
            used = width
    return ["\n".join(head + rows) for rows in pieces] or ["\n".join(head)]


def _split_body(body: str, cfg: SplitConfig, splitter) -> list[str]:
    """A section body in chunk texts: prose through the character splitter, tables row-wise with their header."""
    from .tables import parse_table_block

    lines = body.split("\n")
    out: list[str] = []
    prose: list[str] = []
    i = 0
    while i < len(lines):
        end = parse_table_block(lines, i)
        if end == i:
            prose.append(lines[i])
            i += 1
            continue
        out.extend(splitter.split_text("\n".join(prose)) if "".join(prose).strip() else [])
        prose = []
        table = lines[i:end]
        whole = "\n".join(table)
        out.extend([whole] if text_width(whole, cfg.cjk_width) <= cfg.chunk_size else _table_chunks(table, cfg))
        i = end
    if "".join(prose).strip():
        out.extend(splitter.split_text("\n".join(prose)))
    return out


def _last_heading(section: str) -> str:
    return section.rsplit(SECTION_JOIN, 1)[-1] if section else ""


def _combine(a: ChunkDraft, b: ChunkDraft, section: str) -> ChunkDraft:
    """Join two neighbouring drafts; a part from another section keeps its heading as a first line."""
    def part(d: ChunkDraft) -> str:
        head = _last_heading(d.section)
        return f"{head}\n{d.text}" if d.section != section and head and head not in d.text else d.text

    rows = [r for r in (a.row_start, a.row_end, b.row_start, b.row_end) if r is not None]
    return ChunkDraft(text=part(a) + "\n\n" + part(b), section=section, position=a.position,
                      page=a.page if a.page is not None else b.page,
                      row_start=min(rows) if rows else None, row_end=max(rows) if rows else None,
                      ocr=a.ocr or b.ocr)


def _same_place(a: ChunkDraft, b: ChunkDraft) -> bool:
    """Whether two drafts may share a chunk: same page and same OCR origin (a citation stays true)."""
    return a.page == b.page and a.ocr == b.ocr


def _merge(drafts: list[ChunkDraft], cfg: SplitConfig) -> list[ChunkDraft]:
    """Pack consecutive record rows up to `chunk_size`; merge fragments under `min_chunk` into a neighbour."""
    out: list[ChunkDraft] = []
    for d in drafts:
        prev = out[-1] if out else None
        if prev is None or not _same_place(prev, d):
            out.append(d)
            continue
        joined = text_width(prev.text, cfg.cjk_width) + 2 + text_width(d.text, cfg.cjk_width)
        rows = prev.row_start is not None and d.row_start is not None and prev.section == d.section
        small_prev = text_width(prev.text, cfg.cjk_width) < cfg.min_chunk
        small = small_prev or text_width(d.text, cfg.cjk_width) < cfg.min_chunk
        if rows and joined <= cfg.chunk_size:
            out[-1] = _combine(prev, d, prev.section)
        elif small and joined <= cfg.chunk_size:
            out[-1] = _combine(prev, d, d.section if small_prev else prev.section)
        else:
            out.append(d)
    return out


def split_document(doc: LoadedDocument, cfg: SplitConfig) -> list[ChunkDraft]:
    """Split a document into ordered, non-empty, whitespace-normalised chunks tagged with their origin.

    Each segment of the document (a PDF page, a CSV row, or the whole text) is split on its own so
    a chunk's page and rows are exact; headings carry over from one segment to the next.
    """
    splitter = _char_splitter(cfg)
    drafts: list[ChunkDraft] = []
    context: list[Heading] = []
    for seg in doc.parts():
        text = normalise_whitespace(seg.text)
        if not text:
            continue
        for section, body in _sections(text, doc.format, context):
            for piece in _split_body(body, cfg, splitter):
                piece = normalise_whitespace(piece)
                if piece:
                    drafts.append(ChunkDraft(text=piece, section=section, position=0, page=seg.page,
                                             row_start=seg.row_start, row_end=seg.row_end, ocr=seg.ocr))
        if doc.format in HEADED_FORMATS:
            context = _heading_stack(text, context)
    merged = _merge(drafts, cfg)
    return [dataclasses.replace(d, position=i) for i, d in enumerate(merged)]
