"""OCR for pages without a text layer and for image files, on CPU and offline.

The engine is RapidOCR (`rapidocr-onnxruntime`, Apache-2.0): its wheel ships the PP-OCRv4 detection and
recognition models for Chinese and English, so nothing is downloaded; it runs on onnxruntime's CPU provider.
It is imported and loaded on the first page that needs it (`import ingest` stays light) and kept for the
process. Recognised boxes are put back in reading order: boxes on one baseline form a line; a run of lines
that split into the same number (>= 2) of widely spaced cells is a table and becomes a Markdown table; a
line set clearly taller than the body text becomes a heading.

Limits (`LoadLimits`): at most `ocr_max_pages` pages per document are OCR'd (more is that document's
failure, named before any work is done) and a document whose OCR runs past `ocr_timeout_s` fails at the
page where the time ran out; progress is logged per page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ragtune.errors import InputError

from .tables import markdown_table

log = logging.getLogger(__name__)

NO_OCR_TEXT = "no text found by OCR (the image holds no readable text)"
MIN_SCORE = 0.5  # recognition confidence below which a box is treated as noise


@dataclass(frozen=True)
class OcrBox:
    """One recognised text box: its text, axis-aligned bounds in pixels and confidence (0-1)."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    score: float


class OcrEngine(Protocol):
    """Recognises the text boxes in an RGB image (H x W x 3 uint8)."""

    def recognise(self, image: np.ndarray) -> list[OcrBox]:
        """Boxes found in the image, in any order."""


class RapidOcrEngine:
    """RapidOCR on onnxruntime (CPU), models from the wheel; one call at a time (the session is shared)."""

    def __init__(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        self._engine = RapidOCR()
        self._lock = threading.Lock()

    def recognise(self, image: np.ndarray) -> list[OcrBox]:
        with self._lock:
            result, _ = self._engine(image)
        boxes = []
        for points, text, score in result or []:
            xs = [float(p[0]) for p in points]
            ys = [float(p[1]) for p in points]
            boxes.append(OcrBox(str(text), min(xs), min(ys), max(xs), max(ys), float(score)))
        return boxes


_ENGINE: OcrEngine | None = None
_ENGINE_LOCK = threading.Lock()


def default_engine() -> OcrEngine:
    """The process-wide RapidOCR engine, loaded on first use."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            started = time.perf_counter()
            _ENGINE = RapidOcrEngine()
            log.info("OCR engine (RapidOCR, CPU) loaded in %.1f s", time.perf_counter() - started)
        return _ENGINE


def _lines(boxes: Sequence[OcrBox]) -> list[list[OcrBox]]:
    """Group boxes into lines: a box joins a line when their vertical extents overlap by half."""
    lines: list[list[OcrBox]] = []
    for box in sorted(boxes, key=lambda b: ((b.y0 + b.y1) / 2, b.x0)):
        if lines:
            last = lines[-1]
            top, bottom = min(b.y0 for b in last), max(b.y1 for b in last)
            overlap = min(bottom, box.y1) - max(top, box.y0)
            if overlap > 0.5 * min(bottom - top, box.y1 - box.y0):
                last.append(box)
                continue
        lines.append([box])
    return [sorted(line, key=lambda b: b.x0) for line in lines]


def _cells(line: list[OcrBox]) -> list[str]:
    """A line's boxes merged into cells: a gap wider than twice the text height starts a new cell."""
    height = float(np.median([b.y1 - b.y0 for b in line])) or 1.0
    cells = [[line[0]]]
    for box in line[1:]:
        if box.x0 - cells[-1][-1].x1 > 2 * height:
            cells.append([box])
        else:
            cells[-1].append(box)
    return [_join_words([b.text for b in cell]) for cell in cells]


def _join_words(parts: Iterable[str]) -> str:
    """Join box texts with a space, except between CJK characters."""
    out = ""
    for part in parts:
        part = part.strip()
        if out and part and not (ord(out[-1]) > 0x2E80 and ord(part[0]) > 0x2E80):
            out += " "
        out += part
    return out


def boxes_to_text(boxes: Sequence[OcrBox]) -> str:
    """Boxes in reading order as Markdown-ish text: lines, and Markdown tables for aligned cell runs."""
    kept = [b for b in boxes if b.score >= MIN_SCORE and b.text.strip()]
    if not kept:
        return ""
    lines = _lines(kept)
    rows = [_cells(line) for line in lines]
    heights = [float(np.median([b.y1 - b.y0 for b in line])) for line in lines]
    body = float(np.median(heights))
    blocks: list[str] = []
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and len(rows[j]) >= 2 and len(rows[j]) == len(rows[i]):
            j += 1
        if j - i >= 2:
            blocks.append(markdown_table(rows[i:j]))
            i = j
        else:
            blocks.append(_heading_mark(heights[i], body) + " ".join(rows[i]))
            i += 1
    return "\n\n".join(blocks)


def _heading_mark(height: float, body: float) -> str:
    """'# ' / '## ' for a line set clearly larger than the body text (a scan has no font sizes)."""
    if height >= 1.5 * body:
        return "# "
    return "## " if height >= 1.2 * body else ""


def ocr_images(path: Path, images: Sequence[tuple[int, Callable[[], np.ndarray]]], *, total: int,
               timeout_s: float, engine: OcrEngine | None = None) -> dict[int, str]:
    """OCR the given pages ((page number, image loader) pairs) of one document; page -> text.

    Raises InputError naming the file and page when the engine fails or the time budget is spent.
    """
    engine = engine or default_engine()
    started = time.monotonic()
    out: dict[int, str] = {}
    for done, (page, load) in enumerate(images, start=1):
        page_started = time.perf_counter()
        try:
            boxes = engine.recognise(load())
        except InputError:
            raise
        except Exception as err:  # onnxruntime / OpenCV errors: this document fails, not the run
            raise InputError(path, f"OCR failed on page {page} ({type(err).__name__}: {err})") from None
        out[page] = boxes_to_text(boxes)
        log.info("%s: OCR page %d (%d/%d to OCR, %d of %d pages): %d boxes in %.1f s", path, page, done,
                 len(images), page, total, len(boxes), time.perf_counter() - page_started)
        if time.monotonic() - started > timeout_s and done < len(images):
            raise InputError(path, f"OCR took longer than {timeout_s:g} s (stopped after page {page}, "
                                   f"{done} of {len(images)} pages to OCR; RAGTUNE_OCR_TIMEOUT_S)")
    return out


def check_page_limit(path: Path, pages: int, limit: int) -> None:
    """Refuse a document with more pages to OCR than `limit`, before any OCR work is done."""
    if pages > limit:
        raise InputError(path, f"{pages} pages need OCR (no text layer), over the limit of {limit} "
                               "pages per document (RAGTUNE_OCR_MAX_PAGES)")
