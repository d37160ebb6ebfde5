"""`ragtune eval --calibrate`: fit the "nothing relevant was found" gate on a QA file.

Every question of the file is retrieved for exactly as `/ask` retrieves it (same top_k, search
mode and reranker), and scored with the gate's score (`Assistant.answerability`). The
threshold that refuses the most unanswerable questions while refusing at most 10 % of the
answerable ones is written beside the index (`serving.gate`), with the figures it reached;
serving reads it at start-up. Only retrieval runs: calibrating costs seconds, not a model.
Fit on questions the model was not tuned on; the more unanswerable ones, the better the fit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.data import QAItem
from ragtune.errors import DatasetError, NotFoundError
from ragtune.settings import Settings
from ragtune.types import Retriever
from serving.gate import fit_threshold, write_calibration

log = logging.getLogger(__name__)


def gate_scores(items: Sequence[QAItem], retriever: Retriever, settings: Settings,
                top_k: int) -> list[float]:
    """The gate's score of each question, retrieved for as the service does."""
    from serving.assistant import Assistant
    from serving.config import AssistantConfig
    from serving.loading import load_reranker

    scorer = Assistant(None, retriever,  # type: ignore[arg-type] - retrieval only
                       AssistantConfig.from_settings(settings, top_k=top_k),
                       reranker=load_reranker(settings))
    scores = []
    for item in items:
        hits = scorer.retrieve(item.question, top_k)
        scores.append(scorer.answerability(item.question, hits))
    return scores


def calibrate(items: Sequence[QAItem], retriever: Retriever | None, settings: Settings,
              top_k: int, qa: Path) -> dict[str, Any]:
    """Fit the gate on `items`, write it beside the index and return what was written."""
    if retriever is None:
        raise NotFoundError("--calibrate needs the workspace's index: run `ingest DOCS` first")
    unanswerable = [i for i in items if not i.answerable]
    if not unanswerable:
        raise DatasetError(qa, "--calibrate needs unanswerable questions "
                           "(rows with \"answer\": null)")
    scores = gate_scores(items, retriever, settings, top_k)
    fit = fit_threshold([s for s, i in zip(scores, items) if i.answerable],
                        [s for s, i in zip(scores, items) if not i.answerable], source=str(qa))
    result = {**fit, "qa": str(qa), "top_k": top_k, "embedder": settings.embedder,
              "reranker": settings.reranker or None, "score": "answerability"}
    path = write_calibration(settings.paths.index_dir, result)
    log.info("calibrated gate %s written to %s", fit, path)
    return {**result, "path": str(path)}
