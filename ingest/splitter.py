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
    """Chunking settings: chunk size and overlap in character cells (CJK wide characters count `cjk_width`)."""

    chunk_size: int = 500
    chunk_overlap: int = 60
    cjk_width: int = 2

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


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it is stored: its text, heading path and 0-based position in its document."""

    text: str
    section: str
    position: int


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


def _sections(doc: LoadedDocument) -> list[tuple[str, str]]:
    """Split headed formats at Markdown headings into (heading path, body) pieces, in document order."""
    text = normalise_whitespace(doc.text)
    if doc.format not in HEADED_FORMATS:
        return [("", text)]
    from langchain_text_splitters import MarkdownHeaderTextSplitter

    splitter = MarkdownHeaderTextSplitter(_HEADERS, strip_headers=True, return_each_line=True)
    pieces: list[tuple[str, str]] = []
    for block in splitter.split_text(text):
        section = SECTION_JOIN.join(
            v for _, key in _HEADERS if (v := " ".join(str(block.metadata.get(key, "")).split()))
        )
        if pieces and pieces[-1][0] == section:  # paragraphs of one section, joined back with a blank line
            pieces[-1] = (section, pieces[-1][1] + "\n\n" + block.page_content)
        else:
            pieces.append((section, block.page_content))
    return pieces or [("", text)]  # headings only: keep them as text rather than lose the document


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


def split_document(doc: LoadedDocument, cfg: SplitConfig) -> list[ChunkDraft]:
    """Split a document into ordered, non-empty, whitespace-normalised chunks tagged with their section."""
    splitter = _char_splitter(cfg)
    drafts: list[ChunkDraft] = []
    for section, body in _sections(doc):
        for piece in splitter.split_text(body):
            text = normalise_whitespace(piece)
            if text:
                drafts.append(ChunkDraft(text=text, section=section, position=len(drafts)))
    return drafts
