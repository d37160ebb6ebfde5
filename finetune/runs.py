"""The run directory `runs/<name>/`: its layout, status file, trainer log and loss plot.

```
runs/<name>/
  adapter/                 adapter_config.json + adapter_model.safetensors (what serving loads)
  checkpoints/checkpoint-N optimizer, scheduler, RNG and data position for resume (last K kept)
  trainer_log.jsonl        one JSON object per logging step / evaluation
  loss.png                 train and validation loss
  run_config.yaml          the resolved config (base model location included)
  status.json              running | finished | failed | stopped, step, max_steps, pid
  train-<time>.log         the log of each (re)start; console.log for detached runs
```
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class RunPaths:
    """Where each artifact of one run lives."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def trainer_log(self) -> Path:
        return self.root / "trainer_log.jsonl"

    @property
    def loss_png(self) -> Path:
        return self.root / "loss.png"

    @property
    def run_config(self) -> Path:
        return self.root / "run_config.yaml"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def launch_config(self) -> Path:
        return self.root / "launch.yaml"

    @property
    def console_log(self) -> Path:
        return self.root / "console.log"

    def logs(self) -> list[Path]:
        """Log files of this run, oldest first."""
        return sorted(self.root.glob("train-*.log"), key=lambda p: p.stat().st_mtime)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_status(paths: RunPaths) -> dict[str, Any] | None:
    try:
        return json.loads(paths.status.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def update_status(paths: RunPaths, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into status.json (atomically) and return the new status."""
    status = read_status(paths) or {"name": paths.name}
    status.update(fields)
    status["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json_atomic(paths.status, status)
    return status


def pid_alive(pid: Any) -> bool:
    try:
        pid = int(pid)
        os.kill(pid, 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def effective_status(status: dict[str, Any] | None) -> str:
    """The recorded status, or "killed" when it says running but its process is gone."""
    if not status:
        return "unknown"
    state = status.get("status", "unknown")
    if state == "running" and not pid_alive(status.get("pid")):
        return "killed"
    return state


def checkpoint_step(path: Path) -> int:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else -1


def is_complete_checkpoint(path: Path) -> bool:
    """Trainer writes trainer_state.json last: without it the save was interrupted."""
    return (path / "trainer_state.json").is_file() and any(path.glob("adapter_model.*"))


def last_checkpoint(checkpoints: Path, *, remove_partial: bool = False) -> Path | None:
    """The newest complete checkpoint; optionally delete interrupted (partial) saves."""
    if not checkpoints.is_dir():
        return None
    found = sorted((p for p in checkpoints.iterdir() if checkpoint_step(p) >= 0),
                   key=checkpoint_step, reverse=True)
    best = None
    for path in found:
        if is_complete_checkpoint(path):
            best = best or path
        elif remove_partial:
            log.warning("removing %s: its save was interrupted", path)
            shutil.rmtree(path, ignore_errors=True)
    return best


def install_adapter(paths: RunPaths, staged: Path) -> None:
    """Make the adapter files in `staged` the run's adapter/ (by renames: never half-written)."""
    for item in staged.iterdir():
        if item.name not in ADAPTER_FILES:
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    old = paths.root / ".adapter.old"
    shutil.rmtree(old, ignore_errors=True)
    if paths.adapter.exists():
        paths.adapter.rename(old)
    staged.rename(paths.adapter)
    shutil.rmtree(old, ignore_errors=True)


def read_log(path: Path) -> list[dict[str, Any]]:
    """Records of trainer_log.jsonl; a torn last line (killed mid-write) is skipped."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def last_value(records: list[dict[str, Any]], key: str) -> Any:
    return next((r[key] for r in reversed(records) if r.get(key) is not None), None)


def smooth(values: list[float]) -> list[float]:
    """Exponential moving average, stronger for longer runs (as LLaMA-Factory's plots)."""
    import math

    weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values)))) - 0.9
    out, last = [], values[0]
    for value in values:
        last = last * weight + (1 - weight) * value
        out.append(last)
    return out


def plot_loss(records: list[dict[str, Any]], out: Path, title: str = "") -> Path | None:
    """Train and validation loss against step, with the degeneration watch's count of
    degenerate validation answers on a second axis, as a PNG (matplotlib, no display needed)."""
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    evals = [(r["step"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        steps, values = zip(*train, strict=True)
        ax.plot(steps, values, color="tab:blue", alpha=0.3, label="train loss")
        if len(values) >= 5:
            ax.plot(steps, smooth(list(values)), color="tab:blue", label="train loss (smoothed)")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or out.parent.name)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    degenerate = [(r["step"], r["eval_degenerate"]) for r in records
                  if r.get("eval_degenerate") is not None]
    if degenerate:  # the degeneration watch, on a second axis
        right = ax.twinx()
        right.plot(*zip(*degenerate, strict=True), "s--", color="tab:red",
                   label="degenerate validation answers")
        right.set_ylabel("degenerate answers")
        right.set_ylim(bottom=0, top=max(max(n for _, n in degenerate), 1) + 0.5)
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels)
    fig.tight_layout()
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)
    return out


def run_summary(paths: RunPaths) -> dict[str, Any]:
    """One row of `ragtune runs`: status, step, last loss, tokens/s."""
    status = read_status(paths) or {}
    records = read_log(paths.trainer_log)
    return {
        "name": paths.name,
        "status": effective_status(status) if status else "unknown",
        "stage": status.get("stage"),
        "step": status.get("step", last_value(records, "step") or 0),
        "max_steps": status.get("max_steps"),
        "loss": last_value(records, "loss"),
        "eval_loss": last_value(records, "eval_loss"),
        "tokens_per_s": last_value(records, "tokens_per_s"),
        "adapter": str(paths.adapter) if (paths.adapter / "adapter_config.json").is_file() else None,
        "updated": status.get("updated"),
        "message": status.get("message"),
    }


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Summaries of every run directory, newest first."""
    if not runs_dir.is_dir():
        return []
    dirs = [d for d in runs_dir.iterdir()
            if d.is_dir() and ((d / "status.json").is_file() or (d / "adapter").is_dir())]
    dirs.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    return [run_summary(RunPaths(d)) for d in dirs]
