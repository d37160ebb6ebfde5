"""Run one eval end to end: settings, log, questions, leak check, backends, results on disk.

The in-process backend is the service's own: the retrieval index of the workspace and the
batched generation engine with every tuned adapter of `runs/`. With `--url` the answers come
from a live server's /ask instead (the retrieval ablation still runs on the local index when
the workspace has one).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evaluation.backends import (Answerer, AssistantAnswerer, HttpAnswerer, NoGeneration,
                                 ReplayAnswerer)
from evaluation.calibrate import calibrate
from evaluation.data import DatasetRef, check_no_leak, load_qa, registered_datasets, run_datasets
from retrieval.rerank import NOT_AVAILABLE, find_reranker
from evaluation.report import new_eval_dir, write_outputs
from evaluation.evaluate import LATEST, EvalConfig, EvalResult, latest_run, run_eval
from ragtune.settings import Settings, load_settings
from ragtune.types import Retriever
from serving.assistant import Assistant
from serving.config import AssistantConfig, EngineConfig
from serving.loading import load_generator, load_retriever
from ragtune.logs import setup_logging

log = logging.getLogger(__name__)

EVAL_TIMEOUT_S = 7 * 24 * 3600.0


def open_backends(cfg: EvalConfig, settings: Settings) -> tuple[Answerer, Retriever | None]:
    """The service's Assistant (engine + index) in process, or a live server plus the local
    index (when there is one) for the retrieval ablation."""
    retriever, reason = load_retriever(settings)
    if retriever is None:
        log.warning("no retrieval: %s", reason)
    if cfg.url:
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return HttpAnswerer(cfg.url, key, concurrency=settings.max_batch_size * 2), retriever
    # A batch job: one engine batch and the queue hold a whole call, and no request times out
    # (the service's per-request timeout would fire for the questions queued behind a slow
    # batch on a CPU).
    engine = EngineConfig.from_settings(
        settings, max_queue=max(settings.max_queue, cfg.batch_size),
        max_batch_size=max(settings.max_batch_size, cfg.batch_size),
        request_timeout_s=EVAL_TIMEOUT_S)
    assistant = Assistant(load_generator(settings, engine), retriever,
                          AssistantConfig.from_settings(settings, top_k=cfg.top_k))
    return AssistantAnswerer(assistant), retriever


def open_replay(cfg: EvalConfig, settings: Settings) -> tuple[Answerer, Retriever | None]:
    """The workspace's index and today's check over the model texts of the eval folder (or
    answers.jsonl) `cfg.replay`; no model is loaded."""
    retriever, reason = load_retriever(settings)
    if retriever is None:
        log.warning("no retrieval: %s", reason)
    answers = cfg.replay / "answers.jsonl" if cfg.replay.is_dir() else cfg.replay
    assistant = Assistant(NoGeneration(), retriever,
                          AssistantConfig.from_settings(settings, top_k=cfg.top_k))
    return ReplayAnswerer(assistant, answers), retriever


def training_datasets(cfg: EvalConfig, settings: Settings) -> list[DatasetRef]:
    """The workspace's registered datasets plus those the evaluated runs trained on."""
    paths = settings.paths
    refs = registered_datasets(paths.datasets_dir)
    runs = {p.parent.parent.name: p.stat().st_mtime
            for p in paths.runs_dir.glob("*/adapter/adapter_config.json")}
    for name in cfg.model_list:
        if name == LATEST and runs:
            name = max(runs, key=runs.__getitem__)
        if name in runs:
            refs += run_datasets(paths.runs_dir / name, paths.datasets_dir)
    return refs


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolved_config(cfg: EvalConfig, settings: Settings, result: EvalResult,
                    n_questions: int, reranker_note: str) -> dict[str, Any]:
    """config.yaml: the flags, plus what they resolved to (models, files, engine)."""
    out: dict[str, Any] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    out["workspace"] = str(settings.workspace)
    out["resolved"] = {
        "configurations": [c["config"] for c in result.configurations],
        "questions": n_questions, "qa_sha256": _sha256(cfg.qa),
        "generator": settings.generator if not cfg.url else f"server {cfg.url}",
        "embedder": settings.embedder, "reranker": reranker_note,
        "assistant_name": settings.assistant_name, "organisation": settings.organisation,
    }
    return out


def run(cfg: EvalConfig, *, answerer: Answerer | None = None,
        retriever: Retriever | None = None, show_progress: bool = True
        ) -> tuple[EvalResult, Path]:
    """Evaluate and write `<workspace>/evals/<timestamp>/`; returns the result and that folder.

    `answerer`/`retriever` replace the workspace's engine and index (tests, embedding callers).
    """
    settings = load_settings(workspace=cfg.workspace)
    log_path = setup_logging(settings.paths.logs_dir, "eval")
    items = load_qa(cfg.qa, cfg.limit)
    check_no_leak(items, cfg.qa, training_datasets(cfg, settings))
    own = answerer is None
    if own:
        opener = open_replay if cfg.replay is not None else open_backends
        answerer, retriever = opener(cfg, settings)
    try:
        reranker, note = None, NOT_AVAILABLE
        if cfg.rerank and retriever is not None and cfg.mode_list:
            reranker, note = find_reranker(cfg.reranker)
        calibrated = None
        if cfg.calibrate:
            calibrated = calibrate(items, retriever, settings, cfg.top_k, cfg.qa)
            if isinstance(answerer, AssistantAnswerer):
                answerer.assistant.config.answerable_threshold = calibrated["threshold"]
        latest = latest_run(settings.paths.runs_dir, answerer.models())
        result = run_eval(items, answerer, retriever, cfg, latest=latest, reranker=reranker,
                          rerank_note=note, show_progress=show_progress)
    finally:
        if own:
            answerer.close()
            if retriever is not None and hasattr(retriever, "close"):
                retriever.close()
    out_dir = new_eval_dir(settings.paths.evals_dir)
    if calibrated is not None:
        result.notes.append(
            f"gate calibrated: answerability < {calibrated['threshold']} is refused "
            f"({calibrated['refused_unanswerable']:.0%} of {calibrated['unanswerable']} "
            f"unanswerable, {calibrated['refused_answerable']:.0%} of {calibrated['answerable']} "
            f"answerable questions); written to {calibrated['path']}")
        if cfg.url:
            result.notes.append("the server at --url reads the new gate when it restarts")
    if cfg.replay is not None:
        result.notes.append(f"replayed the model texts of {cfg.replay}: nothing was generated")
    result.notes.append(f"log: {log_path}")
    write_outputs(out_dir, result.to_dict(), result.answers,
                  resolved_config(cfg, settings, result, len(items), note))
    return result, out_dir
