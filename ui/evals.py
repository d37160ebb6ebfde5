"""The Eval tab: the latest `ragtune eval` results from `<workspace>/evals/<stamp>/`: the
answer table per configuration (base, base+RAG, tuned, tuned+RAG), the retrieval ablation and
the chart, when there is one."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ragtune.errors import RagtuneError

ANSWER_COLUMNS = ["config", "model", "rag", "n", "correct", "wrong_unflagged",
                  "refusal_unanswerable", "refusal_answerable", "supported", "extracted",
                  "exact_match", "f1", "contains", "rouge_l", "refusal_rate", "citation", "hit",
                  "seconds", "tokens_per_s"]
RETRIEVAL_COLUMNS = ["mode", "hit", "recall", "mrr", "n"]
NO_EVAL = ("No evaluation yet. Run `ragtune eval` (it compares base, base+RAG, tuned and "
           "tuned+RAG) and press ↻.")


@dataclass
class EvalTab:
    summary: gr.Markdown
    answers: gr.Dataframe
    retrieval: gr.Dataframe
    chart: gr.Image
    refresh: gr.Button


def latest_eval(evals_dir: Path) -> Path | None:
    """The newest eval folder that has a results.json."""
    found = [p.parent for p in Path(evals_dir).glob("*/results.json")]
    return max(found, key=lambda p: (p.stat().st_mtime, p.name)) if found else None


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    return "" if value is None else value


def read_eval(folder: Path) -> dict[str, Any]:
    """{summary, answers rows, retrieval rows, chart path or None} of one eval folder."""
    result = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    answers = [[_cell(c.get(k)) for k in ANSWER_COLUMNS] for c in result.get("configurations", [])]
    retrieval = [[_cell(r.get(k)) for k in RETRIEVAL_COLUMNS] for r in result.get("retrieval", [])]
    notes = result.get("notes") or []
    summary = f"**Latest evaluation:** `{folder}`"
    if result.get("k"):
        summary += f" · retrieval k = {result['k']}"
    if notes:
        summary += "\n\n" + "\n".join(f"- {n}" for n in notes)
    chart = folder / "chart.png"
    return {"summary": summary, "answers": answers, "retrieval": retrieval,
            "chart": chart if chart.is_file() else None}


def refresh_fn(evals_dir: Path, guard: Callable[[], None] | None = None):
    """The refresh handler; `guard` raises RagtuneError for a visitor without admin role."""

    def refresh() -> tuple[Any, Any, Any, Any]:
        try:
            (guard or (lambda: None))()
        except RagtuneError as err:
            return f"⚠️ {err}", None, None, None
        folder = latest_eval(evals_dir)
        if folder is None:
            return NO_EVAL, None, None, None
        try:
            data = read_eval(folder)
        except (OSError, ValueError, AttributeError) as err:
            return f"⚠️ cannot read {folder / 'results.json'}: {err}", None, None, None
        image = None
        if data["chart"] is not None:
            from PIL import Image

            with Image.open(data["chart"]) as img:
                image = img.convert("RGB")
        return data["summary"], data["answers"] or None, data["retrieval"] or None, image

    return refresh


def build_eval_tab(evals_dir: Path, guard: Callable[[], None] | None = None) -> EvalTab:
    """The Eval tab's layout and events (inside an open `gr.Tab`)."""
    with gr.Row():
        summary = gr.Markdown(NO_EVAL, elem_id="rt-eval-summary")
        refresh = gr.Button("↻", scale=0, min_width=40)
    answers = gr.Dataframe(headers=ANSWER_COLUMNS, label="Answers per configuration",
                           interactive=False)
    retrieval = gr.Dataframe(headers=RETRIEVAL_COLUMNS, label="Retrieval ablation",
                             interactive=False)
    chart = gr.Image(label="Chart", type="pil", interactive=False)
    refresh.click(refresh_fn(evals_dir, guard), None, [summary, answers, retrieval, chart],
                  api_name="eval")
    return EvalTab(summary, answers, retrieval, chart, refresh)
