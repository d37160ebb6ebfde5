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

_KEEP = ("loss", "eval_loss", "eval_degenerate", "learning_rate", "grad_norm", "epoch")
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
        latest = {k: record[k] for k in ("loss", "eval_loss", "tokens_per_s") if k in record}
        if "eval_degenerate" in record:
            latest["degenerate"] = record["eval_degenerate"]
        update_status(self.paths, step=state.global_step, max_steps=state.max_steps, **latest)
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
        self._first_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start = (time.perf_counter(), int(state.num_input_tokens_seen or 0))
        self._first_step = state.global_step
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
        if not logs or not state.is_world_process_zero:
            return
        if self.bar is None:
            if self.enabled and "loss" in logs:
                self.print_line(state, logs)
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

    def print_line(self, state: Any, logs: dict[str, Any]) -> None:
        """Without a terminal (pipes, --detach): one line per logging step, with tokens/s and ETA."""
        elapsed = time.perf_counter() - self._start[0]
        tokens = int(state.num_input_tokens_seen or 0) - self._start[1]
        done = state.global_step - self._first_step
        eta = elapsed / done * (state.max_steps - state.global_step) if done > 0 else 0.0
        rate = f"{tokens / elapsed:.0f} tok/s" if elapsed > 0 and tokens > 0 else "- tok/s"
        print(f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} {rate} "
              f"eta {int(eta // 60)}m{int(eta % 60):02d}s", file=sys.stderr, flush=True)

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
    """Warns when the loss did not fall over the first epoch (or over a run shorter than that).

    The validation loss decides when there is one (the same examples each time, measured
    before the first step too); otherwise the mean training loss of the two halves is compared.
    """

    def __init__(self, steps_per_epoch: int) -> None:
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.losses: list[float] = []
        self.evals: list[float] = []
        self.checked = False
        self.warning: str | None = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if state.global_step > self.window(args) or not logs:
            return
        for key, bucket in (("loss", self.losses), ("eval_loss", self.evals)):
            if key in logs and is_finite(logs[key]):
                bucket.append(float(logs[key]))

    def window(self, args: Any) -> int:
        """The first epoch, but at least 8 logged steps when epochs are tiny."""
        return max(self.steps_per_epoch, 8 * int(args.logging_steps))

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.window(args):
            self.check(state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.check(state)

    def check(self, state: Any) -> None:
        if self.checked:
            return
        if len(self.evals) >= 2:
            start, end, what = self.evals[0], self.evals[-1], "validation"
        elif len(self.losses) >= 8:
            half = len(self.losses) // 2
            start = sum(self.losses[:half]) / half
            end = sum(self.losses[half:]) / (len(self.losses) - half)
            what = "training"
        else:
            return
        self.checked = True
        if end < start * 0.99:
            return
        self.warning = (
            f"the {what} loss did not fall over the first epoch ({start:.3f} -> {end:.3f}). "
            "Usual remedies: raise --learning_rate (LoRA typically 1e-4 to 1e-3), train longer "
            "(--num_train_epochs / --max_steps), check that the answers in the dataset are "
            "consistent and that --cutoff_len does not cut them off")
        if state.is_world_process_zero:
            log.warning(self.warning)
