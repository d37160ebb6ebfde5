"""Config dataclasses of the serving core: the engine and the assistant.

Each is built from the product `Settings` (`from_settings`) and validated in `__post_init__`,
naming the bad field and value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from ragtune.errors import ConfigError
from ragtune.settings import Settings
from serving.gate import read_calibration

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,99}$")
SEARCH_MODES = ("hybrid", "dense", "bm25")
# The gate's threshold when neither the settings nor a calibration beside the index give one: a
# question whose best passage sentence covers less of its (IDF-weighted) terms than this is
# answered "I don't know". The threshold `ragtune eval --calibrate` fitted on data/eval with the
# answer-type rules (eval 20261201-105746: 0.293, refusing all 6 unanswerable and 4 % of the 109
# answerable questions), rounded; chosen before the outside corpora were scored with it.
DEFAULT_ANSWERABLE = 0.29


def require_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(name, value, "must be greater than 0")


@dataclass
class EngineConfig:
    """How the in-process transformers engine loads and batches.

    `max_batch_size` rows run at once (prefilling or decoding; further requests wait in a
    queue of `max_queue`, 503 beyond); an idle worker waits `batch_wait_ms` for company before
    its first step. Each step prefills at most `prefill_chunk_tokens` prompt tokens, so a long
    prompt delays running rows by one chunk at a time. `prefix_cache_entries` system-prompt
    KV caches are kept (0: off). `repeat_guard_tokens`: a row whose last N tokens repeat one
    unit of at most N/4 tokens (a degenerate loop) stops there (0: off); `repeat_ban`: a row
    may not write one copy too many of what it has just repeated, back to back or as a near
    loop (the next best token is taken instead; `serving.repeats`). `weight_kernel`:
    "block" serves Linear weights that lie exactly on a GGUF Q4_1/Q8_0 grid (the embedded
    generator) from their packed form on CPU (`serving.blockquant`), "dense" always uses the
    fp32 weights, "auto" uses block kernels when the model is on that grid and they build here.
    """

    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_batch_size: int = 16  # the settings' default, measured: bench/bench_serve.py --sweep
    max_queue: int = 64
    batch_wait_ms: float = 4.0
    request_timeout_s: float = 120.0
    prefill_chunk_tokens: int = 256
    prefix_cache_entries: int = 8
    repeat_guard_tokens: int = 32
    repeat_ban: bool = True
    weight_kernel: Literal["auto", "dense", "block"] = "auto"

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ConfigError("device", self.device, "use auto, cpu, cuda or mps")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError("dtype", self.dtype, "use auto, float32, bfloat16 or float16")
        require_positive("max_batch_size", self.max_batch_size)
        require_positive("max_queue", self.max_queue)
        require_positive("request_timeout_s", self.request_timeout_s)
        require_positive("prefill_chunk_tokens", self.prefill_chunk_tokens)
        if self.prefix_cache_entries < 0:
            raise ConfigError("prefix_cache_entries", self.prefix_cache_entries,
                              "must be 0 (off) or more")
        if self.repeat_guard_tokens != 0 and self.repeat_guard_tokens < 8:
            raise ConfigError("repeat_guard_tokens", self.repeat_guard_tokens,
                              "must be 0 (off) or at least 8")
        if self.weight_kernel not in ("auto", "dense", "block"):
            raise ConfigError("weight_kernel", self.weight_kernel, "use auto, dense or block")
        if self.batch_wait_ms < 0:
            raise ConfigError("batch_wait_ms", self.batch_wait_ms, "must be 0 or more")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> EngineConfig:
        values = dict(device=settings.device, dtype=settings.dtype,
                      max_batch_size=settings.max_batch_size, max_queue=settings.max_queue,
                      batch_wait_ms=settings.batch_wait_ms,
                      request_timeout_s=settings.request_timeout_s,
                      prefill_chunk_tokens=settings.prefill_chunk_tokens,
                      prefix_cache_entries=settings.prefix_cache_entries,
                      repeat_guard_tokens=settings.repeat_guard_tokens,
                      repeat_ban=settings.repeat_ban,
                      weight_kernel=settings.weight_kernel)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


@dataclass
class AssistantConfig:
    """How questions become prompts: retrieval depth, relevance cut-off, refusal, identity."""

    top_k: int = 4
    relevance_threshold: float = 0.0
    on_unsupported: Literal["extract", "refuse", "flag"] = "extract"
    answerable_threshold: float = DEFAULT_ANSWERABLE  # the gate on `grounding.answerability`
    extract_threshold: float = 0.0  # `extract` quotes only a sentence at least this relevant
    rerank_pool: int = 20  # candidates the reranker (when there is one) chooses the top_k from
    max_new_tokens: int = 256
    search_mode: str = "hybrid"
    refuse_without_context: bool = True
    assistant_name: str = "ragtune"
    organisation: str = "ragtune"
    history_size: int = 1000
    context_echo_guard: bool = True  # a RAG reply may not copy the context's "[n] source" lines

    def __post_init__(self) -> None:
        require_positive("top_k", self.top_k)
        require_positive("max_new_tokens", self.max_new_tokens)
        require_positive("history_size", self.history_size)
        if self.search_mode not in SEARCH_MODES:
            raise ConfigError("search_mode", self.search_mode, f"use one of {SEARCH_MODES}")
        if self.on_unsupported not in ("extract", "refuse", "flag"):
            raise ConfigError("on_unsupported", self.on_unsupported, "use extract, refuse or flag")
        if not 0.0 <= self.extract_threshold <= 1.0:
            raise ConfigError("extract_threshold", self.extract_threshold, "must be between 0 and 1")
        if not 0.0 <= self.answerable_threshold <= 1.0:
            raise ConfigError("answerable_threshold", self.answerable_threshold,
                              "must be between 0 and 1")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> AssistantConfig:
        """From the settings; the gate comes from them, else from the index's calibration."""
        threshold = settings.answerable_threshold
        if threshold is None:
            calibration = read_calibration(settings.paths.index_dir)
            threshold = calibration["threshold"] if calibration else DEFAULT_ANSWERABLE
        values = dict(top_k=settings.top_k, relevance_threshold=settings.relevance_threshold,
                      on_unsupported=settings.on_unsupported, answerable_threshold=threshold,
                      extract_threshold=settings.extract_threshold,
                      context_echo_guard=settings.context_echo_guard,
                      max_new_tokens=settings.max_new_tokens,
                      assistant_name=settings.assistant_name, organisation=settings.organisation)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
