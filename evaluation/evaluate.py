"""`ragtune eval`: what tuning and retrieval buy, in numbers.

Every eval question goes through each model (base, then each tuned run) without and with
retrieval (base, base+RAG, RUN, RUN+RAG), through the same batched engine as the service (or a
live server's /ask). Retrieval is measured on its own too: dense, BM25, hybrid and, when a
cross-encoder is available offline, hybrid + reranker. Questions found in the training data
stop the eval before any model is loaded.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.backends import Answerer, Reply
from evaluation.data import QAItem
from retrieval.rerank import NOT_AVAILABLE, CrossEncoderReranker, reranked_search
from evaluation.metrics import mean, score_answer, score_retrieval
from ragtune.prompts import cited_numbers
from ragtune.errors import ConfigError, ModelNotFoundError
from ragtune.types import Retriever

log = logging.getLogger(__name__)

SEARCH_MODES = ("dense", "bm25", "hybrid")
LATEST = "latest"


@dataclass
class EvalConfig:
    """What to evaluate and how; written next to the results as config.yaml."""

    qa: Path = Path("data/eval/qa.jsonl")  # eval questions: {"question","answer","source"} lines
    models: str = "base,latest"  # comma-separated: base, run names, "latest" (newest run)
    k: int = 5  # depth of the retrieval metrics (hit@k, recall@k, MRR)
    top_k: int = 4  # passages given to the model in the +RAG rows (/ask's default)
    modes: str = "dense,bm25,hybrid"  # retrieval ablation modes ("" to skip the ablation)
    rerank: bool = True  # add hybrid + cross-encoder reranker when one is available offline
    reranker: str | None = None  # a cross-encoder dir or cached HF id (default: look in the cache)
    max_new_tokens: int = 64  # answer length cap (greedy decoding)
    batch_size: int = 16  # questions handed to the engine per call (the progress bar's step)
    url: str | None = None  # a live ragtune server: answers come from its /ask
    limit: int | None = None  # only the first N questions (quick checks)
    json: bool = False  # print the results as JSON instead of tables
    workspace: Path | None = None  # default: the settings' workspace
    calibrate: bool = False  # fit the refusal gate on this QA file first (written by the index)
    replay: Path | None = None  # an earlier eval folder: re-score its model texts, generate nothing

    def __post_init__(self) -> None:
        self.qa = Path(self.qa)
        if not 1 <= self.k <= 50:
            raise ConfigError("k", self.k, "must be between 1 and 50")
        if not 1 <= self.top_k <= 50:
            raise ConfigError("top_k", self.top_k, "must be between 1 and 50")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", self.max_new_tokens, "must be at least 1")
        if self.batch_size < 1:
            raise ConfigError("batch_size", self.batch_size, "must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit", self.limit, "must be at least 1 (or unset for all)")
        if self.replay is not None:
            self.replay = Path(self.replay)
            if self.url is not None:
                raise ConfigError("replay", self.replay, "replays texts in process; drop --url")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ConfigError("url", self.url, "must start with http:// or https://")
        if not self.model_list:
            raise ConfigError("model", self.models, "name at least one model, e.g. base,latest")
        bad = [m for m in self.mode_list if m not in SEARCH_MODES]
        if bad:
            raise ConfigError("modes", self.modes, f"unknown mode {bad[0]!r}; use {SEARCH_MODES}")

    @property
    def model_list(self) -> list[str]:
        names = [m.strip() for m in self.models.split(",") if m.strip()]
        return list(dict.fromkeys(names))

    @property
    def mode_list(self) -> list[str]:
        return [m.strip() for m in self.modes.split(",") if m.strip()]


@dataclass(frozen=True)
class Configuration:
    """One row of the answer table: a model with or without retrieval."""

    model: str
    use_rag: bool

    @property
    def name(self) -> str:
        return f"{self.model}+RAG" if self.use_rag else self.model


@dataclass
class EvalResult:
    """Everything one eval found; `to_dict` is results.json."""

    k: int
    configurations: list[dict[str, Any]]
    retrieval: list[dict[str, Any]]
    answers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("answers")
        return out


def resolve_models(requested: Sequence[str], available: Sequence[str],
                   latest: str | None) -> tuple[list[str], list[str]]:
    """Turn the --model list into served model names; "latest" is the newest tuned run."""
    models, notes = [], []
    for name in requested:
        if name == LATEST:
            if latest is None:
                notes.append("no tuned run found (train one with `finetune run`): "
                             "tuned and tuned+RAG rows are left out")
                continue
            name = latest
        if name not in available:
            raise ModelNotFoundError(
                f"model {name!r} is not served; available: {', '.join(available)} "
                "(tuned runs are runs/<name>/adapter in the workspace)")
        if name not in models:
            models.append(name)
    return models, notes


def latest_run(runs_dir: Path, available: Sequence[str]) -> str | None:
    """The most recently written run among the available adapters."""
    runs = [(p.stat().st_mtime, p.parent.parent.name)
            for p in runs_dir.glob("*/adapter/adapter_config.json")
            if p.parent.parent.name in available]
    if runs:
        return max(runs)[1]
    tuned = [m for m in available if m != "base"]
    return tuned[-1] if tuned else None


def configurations(models: Sequence[str], rag: bool) -> list[Configuration]:
    """base, base+RAG, RUN, RUN+RAG, ... (the +RAG rows only when retrieval is available)."""
    out = []
    for model in models:
        out.append(Configuration(model, False))
        if rag:
            out.append(Configuration(model, True))
    return out


def _progress(total: int, desc: str, show: bool) -> Any:
    """A tqdm bar on stderr (rate and ETA), one per phase so each ETA has a steady rate."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="q", file=sys.stderr, dynamic_ncols=True,
                disable=not show, smoothing=0.1)


def retrieval_ablation(items: Sequence[QAItem], retriever: Retriever, modes: Sequence[str],
                       k: int, reranker: CrossEncoderReranker | None = None,
                       show_progress: bool = False) -> list[dict]:
    """hit@k, recall@k and MRR of each search mode over the questions with a source."""
    scored = [i for i in items if i.answerable and i.source]
    runs: list[tuple[str, Any]] = [(m, (lambda q, m=m: retriever.search(q, k, m))) for m in modes]
    if reranker is not None:
        runs.append(("hybrid+rerank", lambda q: reranked_search(retriever, reranker, q, k)))
    out = []
    with _progress(len(scored) * len(runs), "retrieval", show_progress) as bar:
        for mode, search in runs:
            bar.set_description(f"retrieval {mode}")
            scores = []
            for item in scored:
                ranked = [h.chunk.source for h in search(item.question)]
                scores.append(score_retrieval(ranked, item.source, k))
                bar.update(1)
            out.append({"mode": mode, "k": k, "n": len(scores), "hit": mean([s.hit for s in scores]),
                        "recall": mean([s.recall for s in scores]),
                        "mrr": mean([s.mrr for s in scores])})
    return out


def _row(conf: Configuration, item: QAItem, reply: Reply, k: int) -> dict[str, Any]:
    """One scored reply (a line of answers.jsonl)."""
    scores = score_answer(reply.answer, item.answer, reply.sources if conf.use_rag else (),
                          item.source)
    retrieval = (score_retrieval(reply.sources, item.source, k)
                 if conf.use_rag and item.answerable and item.source else None)
    return {"config": conf.name, "model": conf.model, "rag": conf.use_rag, "line": item.line,
            "lang": item.lang, "question": item.question, "reference": item.answer,
            "expected_source": item.source, "answer": reply.answer, "reasoning": reply.reasoning,
            "sources": reply.sources, "exact_match": scores.exact_match, "f1": scores.f1,
            "contains": scores.contains, "rouge_l": scores.rouge_l, "refused": scores.refused,
            "citation": scores.citation, "hit": retrieval.hit if retrieval else None,
            "mrr": retrieval.mrr if retrieval else None,
            "completion_tokens": reply.completion_tokens, **_trust(item, reply, scores)}


def _page_cited(item: QAItem, reply: Reply) -> float | None:
    """For a question with an expected page: does a cited passage come from that page of the
    expected document? None when the question names no page or nothing was retrieved."""
    if item.page is None or not reply.pages:
        return None
    expected = [item.source] if isinstance(item.source, str) else list(item.source or [])
    cited = cited_numbers(reply.answer)
    return float(any(1 <= n <= len(reply.pages) and reply.pages[n - 1] == item.page
                     and any(reply.sources[n - 1].endswith(e) for e in expected) for n in cited))


def _trust(item: QAItem, reply: Reply, scores: Any) -> dict[str, Any]:
    """The trust columns of one reply (see `evaluation.report` for their definitions)."""
    verdict = reply.grounding or {}
    checked = bool(verdict.get("checked"))
    supported = bool(verdict.get("supported")) if checked else None
    refused = bool(scores.refused) or reply.answer_kind == "refused"
    flagged = refused or reply.answer_kind == "extracted" or supported is False
    correct = bool(scores.contains) if item.answerable else None
    return {"answer_kind": reply.answer_kind, "supported": supported,
            "page_cited": _page_cited(item, reply),
            "grounding_reason": verdict.get("reason"), "generated": reply.generated,
            "answerability": verdict.get("answerability"),
            "correct": None if correct is None else float(correct),
            "wrong_unflagged": float(not correct and not flagged) if item.answerable
            else float(not flagged)}


def answer_all(items: Sequence[QAItem], answerer: Answerer, confs: Sequence[Configuration],
               cfg: EvalConfig, show_progress: bool = False
               ) -> tuple[list[dict], dict[str, float]]:
    """Every question through every configuration, `batch_size` questions per engine call.

    Questions go in batches of one language, shortest first: a batch is left-padded to its
    longest prompt, and Chinese passages cost about three times the tokens of English ones on
    SmolLM2's tokenizer, so mixed batches would pad most rows to the Chinese length."""
    rows: list[dict] = []
    seconds: dict[str, float] = {}
    ordered = sorted(items, key=lambda i: (i.lang, len(i.question)))
    with _progress(len(items) * len(confs), "answers", show_progress) as bar:
        for conf in confs:
            bar.set_description(conf.name)
            started = time.perf_counter()
            first = len(rows)
            for start in range(0, len(ordered), cfg.batch_size):
                batch = ordered[start:start + cfg.batch_size]
                replies = answerer.answer([i.question for i in batch], model=conf.model,
                                          use_rag=conf.use_rag, top_k=cfg.top_k,
                                          max_new_tokens=cfg.max_new_tokens)
                rows += [_row(conf, item, reply, cfg.k)
                         for item, reply in zip(batch, replies, strict=True)]
                bar.update(len(batch))
            rows[first:] = sorted(rows[first:], key=lambda r: r["line"])  # file order again
            seconds[conf.name] = time.perf_counter() - started
            log.info("%s: %d questions in %.1fs", conf.name, len(items), seconds[conf.name])
    return rows, seconds


def run_eval(items: Sequence[QAItem], answerer: Answerer, retriever: Retriever | None,
             cfg: EvalConfig, *, latest: str | None = None,
             reranker: CrossEncoderReranker | None = None, rerank_note: str = NOT_AVAILABLE,
             show_progress: bool = True) -> EvalResult:
    """The eval proper, on given questions, answerer and retriever (no files written)."""
    from evaluation.report import aggregate

    started = time.perf_counter()
    models, notes = resolve_models(cfg.model_list, answerer.models(), latest)
    if not models:
        raise ConfigError("model", cfg.models, "no model left to evaluate")
    rag = retriever is not None or cfg.url is not None
    if not rag:
        notes.append("no retrieval index: the +RAG rows and the retrieval ablation are left out "
                     "(run `ingest data/docs` first)")
    elif retriever is None and cfg.mode_list:
        notes.append("retrieval ablation skipped: no local index in this workspace (the server's "
                     "retrieval is still scored in the +RAG rows)")
    confs = configurations(models, rag)
    modes = cfg.mode_list if retriever is not None else []
    ablation: list[dict] = []
    if retriever is not None and modes:
        if cfg.rerank:
            notes.append(rerank_note)
        ablation = retrieval_ablation(items, retriever, modes, cfg.k,
                                      reranker if cfg.rerank else None, show_progress)
    rows, seconds = answer_all(items, answerer, confs, cfg, show_progress)
    summary = aggregate(rows, [c.name for c in confs], seconds)
    return EvalResult(cfg.k, summary, ablation, rows, notes,
                      round(time.perf_counter() - started, 2))
