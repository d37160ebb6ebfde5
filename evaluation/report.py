"""Eval output: per-configuration aggregates, the terminal table, and the files of one eval.

Files in `<workspace>/evals/<timestamp>/`: results.json (everything), results.csv (one row per
configuration, then one per retrieval mode), answers.jsonl (every reply with its scores),
chart.png (answer metrics per configuration and the retrieval ablation), config.yaml.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.metrics import mean

# The table's columns. Trust first: Correct (answerable: the reference is in the final answer),
# Wrong-unflagged (answerable: not correct yet neither refused, extracted nor marked
# unsupported; unanswerable: answered with a generated answer that is not marked), refusals
# on unanswerable and answerable questions, Supported (share of the model's answers, before
# any replacement, whose grounding check passed; its own "I don't know" is no claim and not
# counted) and Extracted (share answered by quoting a passage sentence).
ANSWER_METRICS = ("correct", "wrong_unflagged", "refusal_unanswerable", "refusal_answerable",
                  "supported", "extracted", "f1", "citation")
TRUST_CHART = ("correct", "wrong_unflagged", "refusal_unanswerable", "refusal_answerable",
               "supported", "extracted")
RETRIEVAL_METRICS = ("hit", "recall", "mrr")
MODEL_REFUSED = "the model said it does not know"  # serving.assistant's reason: not a claim
LABELS = {"exact_match": "EM", "f1": "F1", "contains": "Contain", "rouge_l": "ROUGE-L",
          "refusal_rate": "Refusal", "citation": "Cite", "hit": "hit@k", "recall": "recall@k",
          "mrr": "MRR", "correct": "Correct", "wrong_unflagged": "Wrong-unfl",
          "refusal_unanswerable": "Ref@unans", "refusal_answerable": "Ref@ans",
          "supported": "Supported", "extracted": "Extracted"}


def _summary(rows: Sequence[dict]) -> dict[str, Any]:
    """Means of the answer metrics over rows (None where a metric does not apply)."""
    answerable = [r for r in rows if r["reference"] is not None]
    unanswerable = [r for r in rows if r["reference"] is None]
    return {
        "n": len(rows),
        "exact_match": mean([r["exact_match"] for r in rows]),
        "f1": mean([r["f1"] for r in rows]),
        "contains": mean([r["contains"] for r in rows]),
        "rouge_l": mean([r["rouge_l"] for r in rows]),
        "refusal_rate": mean([float(r["refused"]) for r in rows]),
        "refusal_unanswerable": mean([float(r["refused"]) for r in unanswerable]),
        "refusal_answerable": mean([float(r["refused"]) for r in answerable]),
        "citation": mean([r["citation"] for r in rows]),
        "correct": mean([r.get("correct") for r in answerable]),
        "wrong_unflagged": mean([r.get("wrong_unflagged") for r in rows]),
        "supported": mean([float(r["supported"]) for r in rows if r.get("supported") is not None
                           and r.get("grounding_reason") != MODEL_REFUSED]),
        "extracted": mean([float(r.get("answer_kind") == "extracted") for r in rows]),
        "page_cited": mean([r.get("page_cited") for r in rows]),
        "hit": mean([r["hit"] for r in rows]),
        "mrr": mean([r["mrr"] for r in rows]),
    }


def aggregate(rows: Sequence[dict], names: Sequence[str],
              seconds: dict[str, float]) -> list[dict[str, Any]]:
    """One summary per configuration, in `names` order, with a per-language breakdown."""
    out = []
    for name in names:
        mine = [r for r in rows if r["config"] == name]
        if not mine:
            continue
        summary = {"config": name, "model": mine[0]["model"], "rag": mine[0]["rag"],
                   **_summary(mine)}
        tokens = sum(r["completion_tokens"] for r in mine)
        spent = seconds.get(name, 0.0)
        summary["seconds"] = round(spent, 2)
        summary["tokens_per_s"] = round(tokens / spent, 1) if spent > 0 else None
        summary["by_lang"] = {lang: _summary([r for r in mine if r["lang"] == lang])
                              for lang in sorted({r["lang"] for r in mine})}
        out.append(summary)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def render_tables(configurations: list[dict], retrieval: list[dict], k: int,
                  notes: Sequence[str]) -> Any:
    """A rich renderable: the answer table, the retrieval ablation table and the notes."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    answers = Table(title="Answers (Wrong-unfl: wrong or made up, and not marked as such)",
                    box=box.SIMPLE_HEAD, title_justify="left")
    answers.add_column("configuration", no_wrap=True)
    for metric in ANSWER_METRICS:
        answers.add_column(LABELS[metric], justify="right")
    answers.add_column(f"hit@{k}", justify="right")
    answers.add_column("s", justify="right")
    for c in configurations:
        answers.add_row(c["config"], *[_fmt(c.get(m)) for m in ANSWER_METRICS],
                        _fmt(c.get("hit")), f"{c.get('seconds', 0):.0f}")
    parts: list[Any] = [answers]
    if retrieval:
        table = Table(title=f"Retrieval ablation (k={k})",
                      box=box.SIMPLE_HEAD, title_justify="left")
        table.add_column("mode", no_wrap=True)
        for metric in RETRIEVAL_METRICS:
            table.add_column(LABELS[metric].replace("@k", f"@{k}"), justify="right")
        table.add_column("questions", justify="right")
        for r in retrieval:
            table.add_row(r["mode"], *[_fmt(r[m]) for m in RETRIEVAL_METRICS], str(r["n"]))
        parts.append(table)
    parts.extend(Text(note) for note in notes)
    return Group(*parts)


def _bars(ax: Any, groups: Sequence[str], series: dict[str, list[float]], title: str) -> None:
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    ax.set_ylim(0, 1.2)
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=6, loc="upper center")
    ax.grid(axis="y", alpha=0.3)


def write_chart(path: Path, configurations: list[dict], retrieval: list[dict], k: int) -> Path:
    """Bar chart PNG: answer metrics per configuration, and the retrieval ablation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if retrieval else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.5), squeeze=False)
    _bars(axes[0][0], [c["config"] for c in configurations],
          {LABELS[m]: [c.get(m) or 0.0 for c in configurations] for m in TRUST_CHART},
          "Trust per configuration")
    if retrieval:
        _bars(axes[0][1], [r["mode"] for r in retrieval],
              {LABELS[m].replace("@k", f"@{k}"): [r[m] or 0.0 for r in retrieval]
               for m in RETRIEVAL_METRICS}, f"Retrieval ablation (k={k})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def new_eval_dir(evals_dir: Path) -> Path:
    """A fresh `<evals_dir>/<timestamp>` folder (suffixed when two evals start in one second)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        path = evals_dir / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a new eval folder in {evals_dir}")


def _csv_rows(configurations: list[dict], retrieval: list[dict]) -> list[dict]:
    rows = [{"kind": "answers", **{k: v for k, v in c.items() if k != "by_lang"}}
            for c in configurations]
    rows += [{"kind": "retrieval", "config": r["mode"], **r} for r in retrieval]
    return rows


def write_outputs(out_dir: Path, result: dict[str, Any], answers: list[dict],
                  config: dict[str, Any]) -> dict[str, Path]:
    """Write results.json, results.csv, answers.jsonl, chart.png and config.yaml."""
    import yaml

    paths = {name: out_dir / name for name in
             ("results.json", "results.csv", "answers.jsonl", "chart.png", "config.yaml")}
    paths["config.yaml"].write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                                    encoding="utf-8")
    with paths["answers.jsonl"].open("w", encoding="utf-8") as handle:
        for row in answers:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    rows = _csv_rows(result["configurations"], result["retrieval"])
    fields: list[str] = []
    for row in rows:
        fields += [f for f in row if f not in fields]
    with paths["results.csv"].open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    write_chart(paths["chart.png"], result["configurations"], result["retrieval"], result["k"])
    result = {**result, "files": {k: str(v) for k, v in paths.items()}}
    paths["results.json"].write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n",
                                     encoding="utf-8")
    return paths
