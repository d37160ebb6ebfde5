"""Degeneration watch: at each evaluation, greedy answers to a few validation prompts.

The validation loss can fall while the model learns to answer `[4] [4] [4] …` (seen on a new
corpus with the CPU recipe). So every evaluation also generates answers for the first
`degeneration_samples` validation prompts (the serving layout: chat template with the
generation prompt, greedy, `degeneration_max_new_tokens`) and counts the degenerate ones with
`ragtune.quality.degeneracy`. The count is logged beside the loss (`eval_degenerate`), and
checkpoints are ranked by (degenerate answers, eval loss) through the Trainer's own best-model
tracking, so the best one survives checkpoint rotation. A run whose answers collapse (more
than half degenerate at a step after at most half were before) says so loudly, and at the end
its adapter is the best checkpoint's (`keep_best`).
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from typing import Any

from pathlib import Path

import torch

from finetune.runs import (ADAPTER_FILES, RunPaths, install_adapter, is_complete_checkpoint,
                           read_log)
from ragtune.quality import degeneracy

log = logging.getLogger(__name__)

RANK_METRIC = "watch_rank"  # metric_for_best_model: degenerate count + loss / (1 + loss)


@dataclass
class WatchResult:
    answers: list[str]
    reasons: list[str | None]

    @property
    def degenerate(self) -> int:
        return sum(r is not None for r in self.reasons)


class DegenerationWatch:
    """Greedy answers to fixed prompts (token ids with the generation prompt) and their verdicts."""

    def __init__(self, tokenizer: Any, prompts: list[list[int]], max_new_tokens: int) -> None:
        self.tokenizer, self.prompts, self.max_new_tokens = tokenizer, prompts, max_new_tokens

    @torch.no_grad()
    def measure(self, model: torch.nn.Module) -> WatchResult:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        answers = []
        try:
            for prompt in self.prompts:
                ids = torch.tensor([prompt], device=device)
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                     max_new_tokens=self.max_new_tokens, do_sample=False,
                                     use_cache=True, pad_token_id=self.tokenizer.pad_token_id)
                answers.append(self.tokenizer.decode(out[0, len(prompt):],
                                                     skip_special_tokens=True))
        finally:
            model.train(was_training)
        return WatchResult(answers, [degeneracy(a) for a in answers])


def collapsed(history: list[tuple[int, int]], samples: int) -> bool:
    """More than half degenerate now (history's last step), after a step where at most half were."""
    if len(history) < 2:
        return False
    *before, (_, now) = history
    return 2 * now > samples and any(2 * n <= samples for _, n in before)


def collapse_step(history: list[tuple[int, int]], samples: int) -> int | None:
    """The first (step, degenerate count) step of `history` at which the answers collapsed."""
    return next((s for i, (s, _) in enumerate(history) if collapsed(history[:i + 1], samples)),
                None)


class WatchMixin:
    """Trainer mixin: adds `eval_degenerate` and the ranking metric to every evaluation."""

    watch: DegenerationWatch | None = None

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        output = super().evaluation_loop(*args, **kwargs)
        if self.watch is None:
            return output
        prefix = kwargs.get("metric_key_prefix", "eval")
        result = self.watch.measure(self.accelerator.unwrap_model(self.model))
        loss, step = output.metrics.get(f"{prefix}_loss"), self.state.global_step
        rank = math.inf if step == 0 or loss is None else result.degenerate + loss / (1 + loss)
        output.metrics[f"{prefix}_degenerate"] = result.degenerate
        output.metrics[f"{prefix}_{RANK_METRIC}"] = rank
        best = self.state.best_metric
        if step > 0 and (best is None or rank < best):
            self.control.should_save = True  # a new best: make sure its checkpoint exists
        self._watch_report(step, result)
        return output

    def _watch_report(self, step: int, result: WatchResult) -> None:
        history = getattr(self, "_watch_history", [])
        history.append((step, result.degenerate))
        self._watch_history = history
        n = len(result.answers)
        for answer, reason in zip(result.answers, result.reasons, strict=True):
            log.info("step %d sample answer%s: %r", step, f" ({reason})" if reason else "",
                     answer[:200])
        if collapsed(history, n):
            log.error("DEGENERATE ANSWERS: %d of %d validation answers at step %d are loops, "
                      "citation markers only or empty (e.g. %r); the run will keep its best "
                      "checkpoint as the adapter. Lower --learning_rate or train fewer steps.",
                      result.degenerate, n, step,
                      next(a for a, r in zip(result.answers, result.reasons, strict=True) if r))


def keep_best(paths: RunPaths, samples: int, final_step: int, start: Path | None = None
              ) -> dict[str, Any]:
    """After training: when the answers collapsed, replace adapter/ by the best of the saved
    checkpoints, the final weights and the `start` adapter (--adapter, measured at step 0):
    fewest degenerate answers, then lowest eval loss. Returns the status.json fields."""
    records = [r for r in read_log(paths.trainer_log) if "eval_degenerate" in r]
    history = [(int(r["step"]), int(r["eval_degenerate"])) for r in records]
    at = collapse_step(history, samples)
    fields: dict[str, Any] = {"degenerate": history[-1][1] if history else None,
                              "degenerate_samples": samples, "degenerated_at": at,
                              "kept_checkpoint": None}
    if at is None:
        return fields
    candidates = []
    for r in records:
        step, ckpt = int(r["step"]), paths.checkpoints / f"checkpoint-{int(r['step'])}"
        if step == final_step or is_complete_checkpoint(ckpt) or (step == 0 and start):
            candidates.append((int(r["eval_degenerate"]), float(r.get("eval_loss", math.inf)),
                               step))
    if not candidates:
        log.error("the answers degenerated at step %d and no checkpoint was saved before; the "
                  "adapter is the final one", at)
        return fields
    _, _, best = min(candidates)
    source = start if best == 0 else paths.checkpoints / f"checkpoint-{best}"
    fields["kept_checkpoint"] = ("final" if best == final_step else
                                 "start" if best == 0 else f"checkpoint-{best}")
    fields["kept_step"] = best
    if best != final_step:
        staged = paths.root / ".adapter.best"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(source, staged,
                        ignore=lambda d, names: [n for n in names if n not in ADAPTER_FILES])
        install_adapter(paths, staged)
    log.error("the answers degenerated at step %d: the adapter is the one of step %d (%s)",
              at, best, fields["kept_checkpoint"])
    return fields
