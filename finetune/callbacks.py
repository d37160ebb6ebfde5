"""Trainer callbacks: the run log and status, a progress bar with tokens/s, NaN and trend checks."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from transformers import TrainerCallback

from finetune.runs import RunPaths, plot_loss, read_log, update_status
from finetune.trainer import NonFiniteLoss, finite_grads, is_finite

log = logging.getLogger(__name__)

_KEEP = ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch")
_PREFIXES = ("rewards/", "logps/", "eval_rewards/", "kl")


class RunLogCallback(TrainerCallback):
    """Writes trainer_log.jsonl, status.json, log lines and loss.png (main process only)."""

    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths
        self._last: tuple[float, int] | None = None  # (time, tokens) at the previous log

    def _tokens_per_s(self, state: Any) -> float | None:
        now, tokens = time.perf_counter(), int(state.num_input_tokens_seen or 0)
        rate = None
        if self._last is not None and tokens > self._last[1] and now > self._last[0]:
            rate = (tokens - self._last[1]) / (now - self._last[0])
        self._last = (now, tokens)
        return rate

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last = (time.perf_counter(), int(state.num_input_tokens_seen or 0))
        if state.is_world_process_zero:
            update_status(self.paths, step=state.global_step, max_steps=state.max_steps)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        record: dict[str, Any] = {"step": state.global_step}
        for key, value in logs.items():
            if key in _KEEP or key.startswith(_PREFIXES):
                record[key] = value if is_finite(value) else str(value)
        if "learning_rate" in record:
            record["lr"] = record.pop("learning_rate")
        if "loss" in record:
            record["tokens"] = int(state.num_input_tokens_seen or 0)
            rate = self._tokens_per_s(state)
            if rate is not None:
                record["tokens_per_s"] = round(rate, 1)
        if set(record) <= {"step", "epoch"}:
            return  # end-of-training summary: nothing per step
        record["time"] = round(time.time(), 1)
        with self.paths.trainer_log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        log.info("step %d/%d %s", state.global_step, state.max_steps,
                 " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in record.items() if k not in ("step", "time")))
        update_status(self.paths, step=state.global_step, max_steps=state.max_steps,
                      loss=record.get("loss"), tokens_per_s=record.get("tokens_per_s"))
        if "eval_loss" in record:
            self.plot()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            update_status(self.paths, step=state.global_step,
                          checkpoint=f"checkpoint-{state.global_step}")

    def plot(self) -> None:
        try:
            plot_loss(read_log(self.paths.trainer_log), self.paths.loss_png)
        except Exception as err:  # noqa: BLE001 - a plot must never stop training
            log.warning("could not draw %s: %s", self.paths.loss_png, err)


class ProgressCallback(TrainerCallback):
    """A tqdm bar with loss, tokens/s and ETA (main process, interactive terminals only)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self._start: tuple[float, int] = (0.0, 0)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not (self.enabled and state.is_world_process_zero and sys.stderr.isatty()):
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step",
                        dynamic_ncols=True, desc="training")
        self._start = (time.perf_counter(), int(state.num_input_tokens_seen or 0))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if self.bar is None or not logs:
            return
        post = {}
        if "loss" in logs:
            post["loss"] = f"{logs['loss']:.3f}"
            elapsed = time.perf_counter() - self._start[0]
            tokens = int(state.num_input_tokens_seen or 0) - self._start[1]
            if elapsed > 0 and tokens > 0:
                post["tok/s"] = f"{tokens / elapsed:.0f}"
        if "eval_loss" in logs:
            post["val"] = f"{logs['eval_loss']:.3f}"
        if post:
            self.bar.set_postfix(post, refresh=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class NanGuardCallback(TrainerCallback):
    """Stops before an optimizer step whose gradients are NaN/inf (the loss is checked too)."""

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None,
                              **kwargs: Any) -> None:
        if model is not None and not finite_grads(model):
            raise NonFiniteLoss(f"the gradients became NaN/inf at step {state.global_step + 1}; "
                                "stopped before the optimizer step")


class LossTrendCallback(TrainerCallback):
    """Warns when the training loss did not fall over the first epoch (or the whole short run)."""

    def __init__(self, steps_per_epoch: int) -> None:
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.losses: list[tuple[int, float]] = []
        self.checked = False
        self.warning: str | None = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if logs and "loss" in logs and is_finite(logs["loss"]):
            self.losses.append((state.global_step, float(logs["loss"])))
        if not self.checked and state.global_step >= self.steps_per_epoch:
            self.check(state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.checked:
            self.check(state)

    def check(self, state: Any) -> None:
        first = [v for s, v in self.losses if s <= self.steps_per_epoch]
        if len(first) < 4 or self.checked:
            return
        self.checked = True
        k = max(1, len(first) // 4)
        start, end = sum(first[:k]) / k, sum(first[-k:]) / k
        if end < start * 0.98:
            return
        self.warning = (
            f"the training loss did not fall over the first epoch ({start:.3f} -> {end:.3f}). "
            "Usual remedies: raise --learning_rate (LoRA typically 1e-4 to 5e-4), train longer "
            "(--num_train_epochs / --max_steps), check that the answers in the dataset are "
            "consistent and that --cutoff_len does not cut them off")
        if state.is_world_process_zero:
            log.warning(self.warning)
