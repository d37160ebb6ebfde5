"""Scanned-document fixtures made in the tests: text rendered to images and image-only PDFs.

The CJK font comes from the Debian package fonts-wqy-zenhei (installed by .ci/run); without it the
fixtures fail loudly rather than skip.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

FONT = Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")


def font(size: int = 30):
    """The WenQuanYi Zen Hei font (Latin and CJK glyphs) at `size` pixels."""
    from PIL import ImageFont

    if not FONT.is_file():
        raise RuntimeError(f"{FONT} is missing: install the Debian package fonts-wqy-zenhei (.ci/run does)")
    return ImageFont.truetype(str(FONT), size)


def render_lines(lines: Sequence[str], *, width: int = 1000, size: int = 30, columns: int = 0):
    """An RGB image of black text lines on white; `columns` > 0 lays each ' | '-separated line out as
    that many cells (a scanned table)."""
    from PIL import Image, ImageDraw

    face = font(size)
    image = Image.new("RGB", (width, 60 + len(lines) * int(size * 1.8)), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        y = 30 + i * int(size * 1.8)
        cells = line.split(" | ") if columns else [line]
        for j, cell in enumerate(cells):
            draw.text((40 + j * (width - 80) // max(columns, 1), y), cell, fill="black", font=face)
    return image


def image_pdf(path: Path, pages: Sequence[Sequence[str]], **kwargs) -> Path:
    """An image-only PDF (no text layer): each page is rendered text saved as a picture."""
    images = [render_lines(lines, **kwargs) for lines in pages]
    images[0].save(path, "PDF", resolution=100.0, save_all=True, append_images=images[1:])
    return path
