"""Feedback records -> LLaMA-Factory preference datasets (DPO pairs, KTO labels).

- `feedback_dpo.json` (sharegpt, OpenAI tags, `ranking: true`): one row per "A is better than
  B" choice, plus liked-vs-disliked answers to the same question (each like paired with each
  dislike of that question). The prompt is the chosen answer's prompt messages, exactly as the
  model saw them (system prompt, retrieved passages, question).
- `feedback_kto.json` (sharegpt, `kto_tag`): every liked (true) and disliked (false) answer.

Both are registered in `<datasets>/dataset_info.json` (merged) and train with
`finetune run --stage dpo --dataset feedback_dpo` / `--stage kto --dataset feedback_kto`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from feedback.store import FeedbackStore, StoredAnswer
from ragtune.errors import RagtuneError

DPO_NAME, KTO_NAME = "feedback_dpo", "feedback_kto"
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
               "assistant_tag": "assistant", "system_tag": "system"}


class FeedbackExportError(RagtuneError):
    """The feedback cannot make a usable dataset (nothing, one-sided, too few, mixed models)."""

    exit_code = 4
    http_status = 422


@dataclass
class ExportResult:
    """What `export_feedback` wrote, and what it could not write and why."""

    pairs: int = 0
    kto_rows: int = 0
    likes: int = 0
    dislikes: int = 0
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # datasets not written, with the reason


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _prompt(answer: StoredAnswer) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in answer.messages]


def _reply(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def check_base_model(store: FeedbackStore, expected: str | None,
                     answers: list[StoredAnswer]) -> None:
    """Refuse records produced by another base model than the one training will start from."""
    if expected is None:
        return
    others: dict[str, int] = {}
    for a in answers:
        if a.base_model != expected:
            others[a.base_model] = others.get(a.base_model, 0) + 1
    if others:
        named = ", ".join(f"{m!r} ({n} answers)" for m, n in sorted(others.items()))
        raise FeedbackExportError(
            f"{store.path}: feedback records come from another base model than the configured "
            f"{expected!r}: {named}. Preference training needs answers from the model being "
            "tuned: set `generator` to that model (or pass --base_model NAME), or start a new "
            "workspace for the new model")


def dpo_rows(store: FeedbackStore) -> list[dict[str, Any]]:
    """Chosen/rejected rows from A-vs-B choices and like-vs-dislike of the same question."""
    rows, seen = [], set()
    for chosen, rejected, _comment, _ in store.comparisons():
        if _norm(chosen.answer) == _norm(rejected.answer):
            continue  # identical texts teach nothing
        seen.add((chosen.id, rejected.id))
        rows.append({"messages": _prompt(chosen), "chosen": _reply(chosen.answer),
                     "rejected": _reply(rejected.answer), "source": "comparison",
                     "chosen_model": chosen.model, "rejected_model": rejected.model})
    by_question: dict[str, dict[str, list[StoredAnswer]]] = {}
    for answer, rating, _comment, _ in store.ratings():
        by_question.setdefault(_norm(answer.question), {"like": [], "dislike": []})[
            rating].append(answer)
    for groups in by_question.values():
        for good, bad in product(groups["like"], groups["dislike"]):
            if (good.id, bad.id) in seen or _norm(good.answer) == _norm(bad.answer):
                continue
            seen.add((good.id, bad.id))
            rows.append({"messages": _prompt(good), "chosen": _reply(good.answer),
                         "rejected": _reply(bad.answer), "source": "ratings",
                         "chosen_model": good.model, "rejected_model": bad.model})
    return rows


def kto_rows(store: FeedbackStore) -> list[dict[str, Any]]:
    """One row per rated answer: the prompt, the answer, and `label` (like = true)."""
    return [{"messages": [*_prompt(answer), _reply(answer.answer)], "label": rating == "like",
             "model": answer.model} for answer, rating, _comment, _ in store.ratings()]


def _write_json(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write atomically: a failed export never leaves a half-written dataset behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _specs(dpo_file: str, kto_file: str) -> tuple[Any, Any]:
    from ragtune.datasets import DatasetSpec

    dpo = DatasetSpec(DPO_NAME, dpo_file, "sharegpt", ranking=True,
                      columns={"messages": "messages", "chosen": "chosen",
                               "rejected": "rejected"}, tags=dict(OPENAI_TAGS))
    kto = DatasetSpec(KTO_NAME, kto_file, "sharegpt",
                      columns={"messages": "messages", "kto_tag": "label"},
                      tags=dict(OPENAI_TAGS))
    return dpo, kto


def _kto_problem(likes: int, dislikes: int) -> str | None:
    if likes and dislikes:
        return None
    if not likes and not dislikes:
        return "no likes or dislikes yet"
    have, missing = ("likes", "dislikes") if likes else ("dislikes", "likes")
    return (f"only {have} ({likes or dislikes}) and no {missing}: KTO needs both desirable "
            f"and undesirable answers; rate some answers as {missing[:-1]} in the UI or POST "
            "/feedback")


def export_feedback(store: FeedbackStore, dataset_dir: Path, *, min_pairs: int = 1,
                    base_model: str | None = None) -> ExportResult:
    """Write the DPO and KTO datasets that have enough data; raise when neither has."""
    rated = [a for a, *_ in store.ratings()]
    compared = [x for c, r, *_ in store.comparisons() for x in (c, r)]
    if not rated and not compared:
        raise FeedbackExportError(
            f"{store.path}: no feedback yet: like/dislike answers or choose the better of two "
            "answers in the UI (or POST /feedback), then export again")
    check_base_model(store, base_model, list({a.id: a for a in rated + compared}.values()))
    result = ExportResult()
    pairs, kto = dpo_rows(store), kto_rows(store)
    result.likes = sum(r["label"] for r in kto)
    result.dislikes = len(kto) - result.likes
    dpo_spec, kto_spec = _specs(f"{DPO_NAME}.json", f"{KTO_NAME}.json")
    written = []
    if len(pairs) >= min_pairs:
        result.files.append(_write_json(dataset_dir / dpo_spec.file_name, pairs))
        result.pairs = len(pairs)
        written.append(dpo_spec)
    else:
        result.skipped.append(
            f"{DPO_NAME}: {len(pairs)} preference pair(s), fewer than min_pairs={min_pairs}; "
            "pairs come from choosing the better of two answers (compare view) or from a liked "
            "and a disliked answer to the same question")
    problem = _kto_problem(result.likes, result.dislikes)
    if problem is None:
        result.files.append(_write_json(dataset_dir / kto_spec.file_name, kto))
        result.kto_rows = len(kto)
        written.append(kto_spec)
    else:
        result.skipped.append(f"{KTO_NAME}: {problem}")
    if not written:
        raise FeedbackExportError(f"{store.path}: nothing to export: " + "; ".join(result.skipped))
    from ragtune.datasets import write_dataset_info

    write_dataset_info(dataset_dir, written, merge=True)
    return result
