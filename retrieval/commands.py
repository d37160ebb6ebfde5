"""The `ragtune search` command (kept light at import time)."""

from __future__ import annotations

import json as jsonlib
import sys
import textwrap
from pathlib import Path
from typing import Literal

from ragtune.settings import load_checked_settings


def _hit_dict(rank: int, hit, mode: str) -> dict:
    chunk = hit.chunk
    return {"rank": rank, "score": round(hit.score, 6), "source": chunk.source,
            "section": chunk.section, "chunk_index": chunk.position, "chunk_id": chunk.id,
            "mode": mode, "text": chunk.text}


def search(query: str, k: int = 5, mode: Literal["hybrid", "dense", "bm25"] = "hybrid",
           json: bool = False, workspace: Path | None = None) -> int:
    """Search the ingested documents and print the best chunks with source, section and score.

    Hybrid mode fuses the dense (embedding) and BM25 (keyword; jieba words for Chinese)
    rankings with reciprocal rank fusion; its scores are fused ranks, not similarities.

    Args:
        query: What to look for.
        k: How many chunks to return.
        mode: hybrid (default), dense or bm25.
        json: Print one JSON object per line (rank, score, source, section, chunk_index,
            chunk_id, mode, text) instead of text.
        workspace: Workspace directory (default ./workspace or RAGTUNE_WORKSPACE).
    """
    # Imported here, not at module level: the CLI imports every command module at start, and
    # the index brings numpy, FAISS and bm25s (no cycle is involved).
    from retrieval.index import open_index

    settings = load_checked_settings(workspace=workspace)
    with open_index(settings, create=False) as index:
        hits = index.search(query, k=k, mode=mode)
    for rank, hit in enumerate(hits, start=1):
        if json:
            print(jsonlib.dumps(_hit_dict(rank, hit, mode), ensure_ascii=False))
            continue
        where = hit.chunk.source + (f" › {hit.chunk.section}" if hit.chunk.section else "")
        print(f"{rank}. {where}  (score {hit.score:.4f}, chunk {hit.chunk.position})")
        print(textwrap.indent(hit.chunk.text.strip(), "   "))
    if not hits:
        print("no matching chunks", file=sys.stderr)
    return 0
