"""The "nothing relevant was found" gate: its calibration, fitted by `ragtune eval --calibrate`
and kept beside the index (`<index>/calibration.json`, with the figures it reached).

The gate compares one score for every retrieval mode: `grounding.answerability`, the
IDF-weighted share of the question's terms that the best retrieved sentence covers (a
cross-encoder's score, when one is configured, is averaged in). Raw cosine, BM25 and RRF
scores are not comparable with each other, and dense search always returns k hits, so a
threshold on them never fires; this score is mode-independent and lives in [0, 1].
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragtune.errors import DatasetError

CALIBRATION_FILE = "calibration.json"


def read_calibration(index_dir: Path) -> dict[str, Any] | None:
    """The calibration beside an index, or None when there is none."""
    path = Path(index_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        float(data["threshold"])
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(path, f"not a ragtune calibration ({err})") from None
    return data


def write_calibration(index_dir: Path, result: dict[str, Any]) -> Path:
    """Write the calibration atomically beside the index."""
    path = Path(index_dir) / CALIBRATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**result, "created": time.strftime("%Y-%m-%dT%H:%M:%S")},
                              indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path


def fit_threshold(answerable: Sequence[float], unanswerable: Sequence[float],
                  max_false_refusals: float = 0.10, source: str = "the QA file") -> dict[str, Any]:
    """The threshold that refuses the most unanswerable questions while refusing at most
    `max_false_refusals` of the answerable ones (ties: the lower threshold).

    A question is refused when its score is below the threshold. Returns the threshold and
    the refusal rates it reaches on both sets.
    """
    if not answerable:
        raise DatasetError(source, "calibration needs answerable questions (with an answer)")
    candidates = sorted({0.0, *answerable, *unanswerable, 1.01})
    best: tuple[float, float, float] | None = None
    for t in candidates:
        false_refusals = sum(s < t for s in answerable) / len(answerable)
        if false_refusals > max_false_refusals:
            break
        refused = sum(s < t for s in unanswerable) / len(unanswerable) if unanswerable else 0.0
        if best is None or refused > best[1]:
            best = (t, refused, false_refusals)
    threshold, refused, false_refusals = best or (0.0, 0.0, 0.0)
    if threshold > 0:  # halfway to the highest score it keeps below, for a margin
        below = [s for s in (*answerable, *unanswerable) if s < threshold]
        threshold = (threshold + max(below)) / 2 if below else threshold
    return {"threshold": round(threshold, 4), "refused_unanswerable": round(refused, 3),
            "refused_answerable": round(false_refusals, 3),
            "answerable": len(answerable), "unanswerable": len(unanswerable)}
