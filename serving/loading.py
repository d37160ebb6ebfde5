"""Load what a service answers with: the generator backend the settings choose and the
workspace's retrieval index. Shared by the HTTP app's lifespan and by `ragtune eval`, which
runs the very same Assistant in process."""

from __future__ import annotations

import logging
from pathlib import Path

from ragtune.errors import ModelNotFoundError, RagtuneError
from ragtune.settings import Settings, apply_torch_threads
from ragtune.types import Generator, Retriever
from serving.config import EngineConfig

log = logging.getLogger(__name__)


def load_generator(settings: Settings, engine: EngineConfig | None = None,
                   extra_adapters: dict[str, Path] | None = None) -> Generator:
    """The generator backend the settings choose: in-process transformers, or an upstream."""
    if settings.generator_backend == "openai":
        from serving.upstream import OpenAIUpstreamGenerator

        return OpenAIUpstreamGenerator.from_settings(settings)
    from serving.engine import TransformersGenerator

    apply_torch_threads(settings)

    return TransformersGenerator.from_settings(settings, engine, extra_adapters)


def load_retriever(settings: Settings) -> tuple[Retriever | None, str]:
    """The workspace index, or None and the reason (the service then answers without RAG)."""
    index_dir = settings.paths.index_dir
    if not index_dir.exists():
        return None, f"no index at {index_dir}; run `ingest DOCS` first"
    try:
        from retrieval.index import open_index
    except ImportError as err:
        return None, f"retrieval is unavailable ({err})"
    try:
        return open_index(settings), ""
    except RagtuneError as err:
        log.warning("index not loaded: %s", err)
        return None, f"the index at {index_dir} cannot be used: {err}"


def load_reranker(settings: Settings):
    """The configured cross-encoder reranker (`settings.reranker`), or None when none is set.

    A reranker that is configured but cannot be found offline is an error at start-up, not a
    silent fallback to unreranked retrieval.
    """
    if not settings.reranker:
        return None
    from retrieval.rerank import find_reranker

    reranker, note = find_reranker(settings.reranker)
    if reranker is None:
        raise ModelNotFoundError(note)
    log.info("%s", note)
    return reranker
