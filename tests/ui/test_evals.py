"""The Eval tab reads the newest `ragtune eval` output folder (written by the real writer)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gradio_client import Client

from tests.ui.conftest import Stack
from ui.evals import ANSWER_COLUMNS, NO_EVAL, latest_eval, read_eval


def _configuration(name: str, model: str, rag: bool, f1: float) -> dict:
    return {"config": name, "model": model, "rag": rag, "n": 10, "exact_match": f1 / 2,
            "f1": f1, "contains": f1, "rouge_l": f1, "refusal_rate": 0.1,
            "refusal_unanswerable": 1.0, "refusal_answerable": 0.0, "correct": f1,
            "wrong_unflagged": round(1 - f1, 2), "supported": 0.6 if rag else None,
            "extracted": 0.1 if rag else 0.0,
            "citation": 0.5 if rag else None,
            "hit": 0.9 if rag else None, "mrr": 0.8 if rag else None, "seconds": 3.2,
            "tokens_per_s": 40.0, "by_lang": {}}


def write_eval(evals_dir: Path, stamp: str, best: str = "tuned+rag") -> Path:
    from evaluation.report import write_outputs

    folder = evals_dir / stamp
    folder.mkdir(parents=True)
    configurations = [_configuration("base", "base", False, 0.2),
                      _configuration("base+rag", "base", True, 0.5),
                      _configuration("tuned", "tuned-a", False, 0.4),
                      _configuration(best, "tuned-a", True, 0.7)]
    retrieval = [{"mode": mode, "hit": 0.9, "recall": 0.85, "mrr": 0.7, "n": 10}
                 for mode in ("hybrid", "dense", "bm25")]
    write_outputs(folder, {"configurations": configurations, "retrieval": retrieval, "k": 4,
                           "notes": ["6 unanswerable questions"]}, [], {"k": 4})
    return folder


def test_latest_eval_and_its_table(tmp_path: Path) -> None:
    assert latest_eval(tmp_path) is None
    old = write_eval(tmp_path, "20250101-000000", best="old")
    new = write_eval(tmp_path, "20250102-000000")
    os.utime(old / "results.json", (time.time() + 5, time.time() + 5))
    os.utime(new / "results.json", (time.time() + 60, time.time() + 60))
    (tmp_path / "20250103-000000").mkdir()  # an eval still running: no results.json yet
    assert latest_eval(tmp_path) == new
    data = read_eval(new)
    assert [row[0] for row in data["answers"]] == ["base", "base+rag", "tuned", "tuned+rag"]
    columns = dict(zip(ANSWER_COLUMNS, data["answers"][3]))
    assert columns["f1"] == 0.7 and columns["correct"] == 0.7 and columns["supported"] == 0.6
    assert columns["wrong_unflagged"] == 0.3 and data["retrieval"][0][:2] == ["hybrid", 0.9]
    assert data["chart"] == new / "chart.png" and "6 unanswerable" in data["summary"]


def test_eval_tab_shows_the_latest_eval(ui_stack: Stack) -> None:
    ui = Client(ui_stack.ui_url, verbose=False)
    evals_dir = ui_stack.workspace / "evals"
    if latest_eval(evals_dir) is None:
        summary, *_ = ui.predict(api_name="/eval")
        assert summary == NO_EVAL
    folder = write_eval(evals_dir, f"{time.strftime('%Y%m%d-%H%M%S')}-ui")
    summary, answers, retrieval, chart = ui.predict(api_name="/eval")
    assert str(folder) in summary
    assert [row[0] for row in answers["data"]] == ["base", "base+rag", "tuned", "tuned+rag"]
    assert [row[0] for row in retrieval["data"]] == ["hybrid", "dense", "bm25"]
    assert chart is not None and Path(chart).stat().st_size > 1000
