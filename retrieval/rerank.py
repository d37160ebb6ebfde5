"""The cross-encoder reranker of the retrieval ablation, when one is available offline.

A reranker is named explicitly (a local directory or a cached Hugging Face id), or found in
the Hugging Face cache (any cached repo whose name says cross-encoder or reranker). Nothing is
downloaded: when none is found, eval says "reranker: not available offline".
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ragtune.types import Hit, Retriever

log = logging.getLogger(__name__)

NOT_AVAILABLE = "reranker: not available offline"
_RERANKER_NAME = re.compile(r"cross-?encoder|rerank", re.IGNORECASE)


class CrossEncoderReranker:
    """Re-scores (query, chunk text) pairs with a sentence-transformers CrossEncoder."""

    def __init__(self, location: str) -> None:
        from sentence_transformers import CrossEncoder

        self.location = location
        self.model = CrossEncoder(location, device="cpu")

    def rerank(self, query: str, hits: list[Hit], k: int) -> list[Hit]:
        """The k best hits by cross-encoder score."""
        if not hits:
            return []
        scores = self.model.predict([(query, h.chunk.text) for h in hits], batch_size=32)
        ranked = sorted(zip(hits, scores, strict=True), key=lambda pair: -float(pair[1]))
        return [Hit(h.chunk, float(s)) for h, s in ranked[:k]]


def _cached_cross_encoders() -> list[str]:
    """Local snapshot directories of cached repos that look like cross-encoders."""
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception as err:  # noqa: BLE001 - no cache is a normal state
        log.debug("no Hugging Face cache: %s", err)
        return []
    found = []
    for repo in cache.repos:
        if repo.repo_type == "model" and _RERANKER_NAME.search(repo.repo_id):
            for revision in repo.revisions:
                if (Path(revision.snapshot_path) / "config.json").is_file():
                    found.append(str(revision.snapshot_path))
                    break
    return sorted(found)


def _locate(spec: str) -> str | None:
    """A local directory for a named cross-encoder (a directory, or a cached HF id)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path)
    if path.is_absolute() or spec.startswith((".", "~")) or spec.count("/") > 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec, "config.json")
    except Exception:  # noqa: BLE001 - not a valid repo id: not available
        return None
    return str(Path(cached).parent) if isinstance(cached, str) else None


def find_reranker(spec: str | None = None) -> tuple[CrossEncoderReranker | None, str]:
    """Load the named or a cached cross-encoder; (None, reason) when there is none offline."""
    if spec:
        location = _locate(spec)
        if location is None:
            return None, f"{NOT_AVAILABLE} ({spec} is neither a directory nor in the cache)"
        candidates = [location]
    else:
        candidates = _cached_cross_encoders()
    for location in candidates:
        try:
            return CrossEncoderReranker(location), f"reranker: {location}"
        except Exception as err:  # noqa: BLE001 - a broken cache entry is reported, not fatal
            log.warning("cannot load cross-encoder %s: %s", location, err)
    return None, NOT_AVAILABLE


def reranked_search(retriever: Retriever, reranker: CrossEncoderReranker, query: str,
                    k: int, pool: int = 20) -> list[Hit]:
    """Hybrid search for a wider pool of candidates, then the reranker's top k."""
    return reranker.rerank(query, retriever.search(query, max(pool, k), "hybrid"), k)
