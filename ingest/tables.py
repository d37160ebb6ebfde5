"""Tables as Markdown: one renderer for PDF, DOCX, HTML and OCR tables, and the parser the splitter uses.

Every loader turns a table into a GitHub-flavoured Markdown table whose first row is the header, so the
splitter can recognise it (`parse_table_block`) and repeat the header in each chunk that holds part of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_SEPARATOR = re.compile(r"^\|(?:\s*:?-{3,}:?\s*\|)+$")


def _cell(value: object) -> str:
    """A cell's text on one line, with '|' escaped so it cannot open a new column."""
    text = " ".join(str(value if value is not None else "").split())
    return text.replace("|", "\\|")


def markdown_table(rows: Sequence[Sequence[object]]) -> str:
    """Render rows (the first is the header) as a Markdown table; '' when no cell has text.

    Rows are padded to the widest row; empty rows are dropped; merged cells arrive as repeated or
    empty cells from the loaders and stay so (a Markdown table has no spans).
    """
    clean = [[_cell(c) for c in row] for row in rows]
    clean = [row for row in clean if any(row)]
    if not clean:
        return ""
    width = max(len(row) for row in clean)
    if width == 1 and len(clean) == 1:
        return clean[0][0]
    clean = [row + [""] * (width - len(row)) for row in clean]
    lines = ["| " + " | ".join(clean[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(row) + " |" for row in clean[1:]]
    return "\n".join(lines)


def is_table_line(line: str) -> bool:
    """A line of a Markdown table (starts and ends with '|')."""
    line = line.strip()
    return len(line) > 1 and line.startswith("|") and line.endswith("|")


def is_separator(line: str) -> bool:
    """The '|---|---|' line under a Markdown table's header."""
    return bool(_SEPARATOR.match(line.strip().replace(" ", "")))


def parse_table_block(lines: Sequence[str], start: int) -> int:
    """End index (exclusive) of the Markdown table starting at `lines[start]`, or `start` when none.

    A table is a header line, a separator line and any number of row lines.
    """
    if start + 1 >= len(lines) or not is_table_line(lines[start]) or not is_separator(lines[start + 1]):
        return start
    end = start + 2
    while end < len(lines) and is_table_line(lines[end]):
        end += 1
    return end
