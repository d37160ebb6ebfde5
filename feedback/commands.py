"""`ragtune feedback export|stats`: the users' likes, dislikes and choices as training data.

Light at import time (SQLite and JSON only).
"""

from __future__ import annotations

from pathlib import Path

from ragtune.errors import NotFoundError


def _open(workspace: Path | None):
    """(settings, store) for the workspace; a missing database is a clear error."""
    from feedback.store import FeedbackStore, base_model_identity
    from ragtune.settings import load_settings

    settings = load_settings(workspace=workspace)
    db = settings.paths.feedback_db
    if not db.is_file():
        raise NotFoundError(f"no feedback yet: {db} does not exist. Rate answers in the UI "
                            "(`ragtune ui`) or POST /feedback to a running `ragtune serve`")
    return settings, FeedbackStore(db, base_model_identity(settings))


def export(workspace: Path | None = None, output: Path | None = None, min_pairs: int = 1,
           base_model: str | None = None) -> int:
    """Write the feedback as LLaMA-Factory datasets: DPO pairs and KTO likes/dislikes.

    Writes feedback_dpo.json (chosen/rejected, ranking: true) from "A is better than B"
    choices and from a liked and a disliked answer to the same question, and feedback_kto.json
    (kto_tag) from likes and dislikes, registered in dataset_info.json. Train with
    `finetune run --stage dpo --dataset feedback_dpo --adapter <sft run>` (or --stage kto).

    Args:
        workspace: workspace directory (default: the RAGTUNE_WORKSPACE setting).
        output: dataset folder to write into (default: <workspace>/datasets).
        min_pairs: fewest preference pairs worth writing feedback_dpo.json for.
        base_model: the base model the records must come from (default: the configured generator).
    """
    from feedback.export import export_feedback
    from ragtune.errors import ConfigError

    if min_pairs < 1:
        raise ConfigError("min_pairs", min_pairs, "must be 1 or more")
    settings, store = _open(workspace)
    try:
        out = Path(output) if output is not None else settings.paths.datasets_dir
        result = export_feedback(store, out, min_pairs=min_pairs,
                                 base_model=base_model or store.base_model)
    finally:
        store.close()
    for path in result.files:
        print(f"wrote {path}")
    print(f"  {result.pairs} preference pairs (DPO), {result.kto_rows} rated answers (KTO: "
          f"{result.likes} likes, {result.dislikes} dislikes); registered in "
          f"{out / 'dataset_info.json'}")
    for reason in result.skipped:
        print(f"  not written: {reason}")
    if result.pairs:
        print("  train: finetune run --stage dpo --dataset feedback_dpo --adapter <your SFT run>")
    elif result.kto_rows:
        print("  train: finetune run --stage kto --dataset feedback_kto --adapter <your SFT run>")
    return 0


def stats(workspace: Path | None = None, json: bool = False) -> int:
    """Show how much feedback there is: answers, likes, dislikes, choices, per model.

    Args:
        workspace: workspace directory (default: the RAGTUNE_WORKSPACE setting).
        json: print the numbers as JSON.
    """
    import json as jsonlib

    from feedback.export import dpo_rows

    _, store = _open(workspace)
    try:
        data = store.stats()
        data["dpo_pairs"] = len(dpo_rows(store))
        data["configured_base_model"] = store.base_model
    finally:
        store.close()
    if json:
        print(jsonlib.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(f"feedback store {data['db']}\n"
          f"  {data['answers']} answers recorded, {data['likes']} likes, {data['dislikes']} "
          f"dislikes, {data['comparisons']} choices -> {data['dpo_pairs']} DPO pairs")
    for row in data["by_model"]:
        print(f"  {row['model']:20} likes {row['likes']:>4}  dislikes {row['dislikes']:>4}  "
              f"won {data['wins'].get(row['model'], 0):>4}  "
              f"lost {data['losses'].get(row['model'], 0):>4}")
    others = [b for b in data["base_models"] if b != store.base_model]
    if others:
        print(f"  note: records from other base models than {store.base_model!r}: "
              + ", ".join(others))
    return 0
