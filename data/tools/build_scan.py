"""Render a scanned (image-only) PDF from a UTF-8 source: pages of text set as pictures, no text layer.

Used by build_docs.py for the `scan` targets, so the scan in data/docs is reproducible: a fixed font
(DejaVu Sans from fonts-dejavu-core for Latin lines, WenQuanYi Zen Hei from fonts-wqy-zenhei for CJK
lines: Zen Hei's narrow Latin spaces make PP-OCR run English words together), fixed page size and
positions, grayscale JPEG pages, fixed PDF dates. Source format: one rendered line per source line,
'---page---' between pages, '# ' / '## ' lines set larger, and 'a | b | c' lines laid out as table
columns (the table a reader of the scan sees, and the one OCR has to recover).
"""

from __future__ import annotations

import io
from datetime import datetime

FONT = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"  # CJK lines
LATIN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # other lines (fonts-dejavu-core): real word spaces
PAGE = (1000, 1300)  # pixels at 100 dpi: 10 x 13 inches
COLUMNS = (60, 250, 580, 780)  # x of each table column
SIZES = {"# ": 34, "## ": 26}
BODY = 20


def _page(lines: list[str]):
    """One page image (grayscale) with the lines drawn top to bottom."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", PAGE, 255)
    draw = ImageDraw.Draw(image)
    y = 70
    for line in lines:
        prefix = next((p for p in SIZES if line.startswith(p)), None)
        size = SIZES[prefix] if prefix else BODY
        cjk = any(ord(ch) > 0x2E80 for ch in line)
        face = ImageFont.truetype(FONT if cjk else LATIN_FONT, size)
        text = line[len(prefix):] if prefix else line
        if " | " in text:
            for x, cell in zip(COLUMNS, text.split(" | "), strict=False):
                draw.text((x, y), cell, fill=0, font=face)
        elif text:
            draw.text((COLUMNS[0], y), text, fill=0, font=face)
        y += int(size * 2.0)
    return image


def build_scan(source_text: str, title: str, created: datetime) -> bytes:
    """The image-only PDF bytes for `source_text` (pages split at '---page---')."""
    pages = [_page(chunk.strip("\n").split("\n")) for chunk in source_text.split("---page---")]
    out = io.BytesIO()
    pages[0].save(out, "PDF", resolution=100.0, save_all=True, append_images=pages[1:], title=title,
                  author="Lumenhollow Instruments Documentation Team", creationDate=created.timetuple(), modDate=created.timetuple(),
                  quality=70)
    return out.getvalue()
