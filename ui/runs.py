"""What the Fine-tune board does, apart from its layout: the knobs, the exact `finetune run`
command line (an argv list), starting and stopping that command as a subprocess with a log
file (never a shell; its own session, so it outlives the UI and can be stopped as a group),
and reading runs: their list, loss curve and log tail.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragtune.errors import ConfigError, NotFoundError, RagtuneError

INT_KNOBS = ("max_steps", "lora_rank", "lora_alpha", "cutoff_len", "per_device_batch_size",
             "gradient_accumulation_steps")
FLOAT_KNOBS = ("learning_rate", "num_train_epochs")
TEXT_KNOBS = ("name", "stage", "model", "dataset", "dataset_dir")
KNOBS = TEXT_KNOBS + FLOAT_KNOBS + INT_KNOBS


def config_files(root: Path) -> list[Path]:
    """The shipped fine-tune configs: `<root>/configs/finetune/*.yaml`."""
    folder = Path(root) / "configs" / "finetune"
    return sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))


def knobs_from(config_file: Path | None) -> dict[str, Any]:
    """The main knobs of a config file (defaults for the rest), validated by FinetuneConfig."""
    from finetune.config import FinetuneConfig

    cfg = FinetuneConfig.from_yaml(config_file) if config_file else FinetuneConfig()
    data = cfg.to_dict()
    return {key: data.get(key) for key in KNOBS}


def clean_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    """Knob values as their config types (UI numbers arrive as floats); blanks dropped."""
    out: dict[str, Any] = {}
    for key in KNOBS:
        value = knobs.get(key)
        if isinstance(value, list | tuple):  # a multi-select (datasets): comma-separated
            value = ",".join(str(v).strip() for v in value if str(v).strip())
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            if key in INT_KNOBS:
                if float(value) != int(float(value)):
                    raise ValueError("not a whole number")
                value = int(float(value))
            elif key in FLOAT_KNOBS:
                value = float(value)
            else:
                value = str(value).strip()
        except (TypeError, ValueError):
            raise ConfigError(key, value, "expected a " + ("whole number" if key in INT_KNOBS
                                                           else "number")) from None
        out[key] = value
    return out


def validate(config_file: Path | None, knobs: dict[str, Any]):
    """The FinetuneConfig the command will build (ConfigError naming the bad knob, if any)."""
    from finetune.config import FinetuneConfig

    values = clean_knobs(knobs)
    if config_file:
        return FinetuneConfig.from_yaml(Path(config_file), **values)
    return FinetuneConfig.from_dict(values)


def allowed_folders(workspace: Path, root: Path) -> list[str]:
    """The only folders the board takes configs and datasets from: the workspace and the
    repository's `configs/` and `data/` (real paths, symlinks followed)."""
    return [os.path.realpath(p) for p in (workspace, Path(root) / "configs", Path(root) / "data")]


def _check_inside(field: str, raw: Any, path: Path, allowed: list[str]) -> None:
    real = os.path.realpath(path)
    if not any(real == a or real.startswith(a.rstrip(os.sep) + os.sep) for a in allowed):
        raise ConfigError(field, str(raw), f"{real} is outside the folders the board may use "
                          f"({', '.join(allowed)}); copy it into the workspace or data/")


def check_config_file(config_file: Path, workspace: Path, root: Path) -> None:
    """Refuse a config file outside `allowed_folders` before it is read (relative: at root)."""
    path = Path(config_file)
    _check_inside("config", config_file, path if path.is_absolute() else Path(root) / path,
                  allowed_folders(workspace, root))


def check_board_paths(cfg: Any, config_file: Path | None, workspace: Path, root: Path) -> None:
    """Refuse (ConfigError naming the path) a config file, dataset folder, dataset file or a
    registered dataset's `file_name` outside `allowed_folders`: a visitor of the UI must not
    train on (and then serve) files from anywhere on the server. Relative paths are taken from
    `root`, the training process's working directory, as the command would."""
    from ragtune.datasets import read_dataset_info

    root = Path(root)
    allowed = allowed_folders(workspace, root)

    def at_root(path: Path) -> Path:
        return path if path.is_absolute() else root / path

    if config_file is not None:
        check_config_file(config_file, workspace, root)
    dataset_dir = at_root(Path(cfg.dataset_dir)) if cfg.dataset_dir else \
        Path(workspace) / "datasets"
    _check_inside("dataset_dir", cfg.dataset_dir or dataset_dir, dataset_dir, allowed)
    for field in ("dataset", "eval_dataset"):
        for spec in [s.strip() for s in str(getattr(cfg, field) or "").split(",") if s.strip()]:
            path = at_root(Path(spec))
            if spec.endswith((".json", ".jsonl")) or "/" in spec or path.exists():
                path = path if path.exists() else dataset_dir / spec
                _check_inside(field, spec, path, allowed)
            elif (dataset_dir / "dataset_info.json").is_file():
                info = read_dataset_info(dataset_dir).get(spec)
                if info is not None:
                    file = Path(info.file_name)
                    _check_inside(field, spec, file if file.is_absolute() else
                                  dataset_dir / file, allowed)


def _flag_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def finetune_argv(config_file: Path | None, knobs: dict[str, Any], workspace: Path,
                  python: str | None = None) -> list[str]:
    """`python -m ragtune.cli finetune run [--config FILE] --KNOB VALUE ... --workspace WS`."""
    argv = [python or sys.executable, "-m", "ragtune.cli", "finetune", "run"]
    if config_file:
        argv += ["--config", str(config_file)]
    for key, value in clean_knobs(knobs).items():
        argv += [f"--{key}", _flag_value(value)]
    return argv + ["--workspace", str(workspace)]


def command_line(argv: list[str], wrap: bool = False) -> str:
    """The argv as a shell would show it (for display and copy-paste only; never executed);
    `wrap` puts each `--flag value` on its own continued line."""
    if not wrap:
        return shlex.join(argv)
    lines, current = [], []
    for arg in argv:
        if arg.startswith("--") and current:
            lines.append(shlex.join(current))
            current = []
        current.append(arg)
    lines.append(shlex.join(current))
    return " \\\n    ".join(lines)


@dataclass
class Started:
    name: str
    pid: int
    log_file: Path
    argv: list[str]


class RunManager:
    """Fine-tune subprocesses started by this UI, by run name."""

    def __init__(self, workspace: Path, cwd: Path | None = None) -> None:
        self.workspace = Path(workspace)
        self.cwd = Path(cwd) if cwd else Path.cwd()
        self._procs: dict[str, tuple[subprocess.Popen, Started]] = {}
        self._lock = threading.Lock()

    @property
    def runs_dir(self) -> Path:
        return self.workspace / "runs"

    def start(self, name: str, argv: list[str]) -> Started:
        """Start `argv` (a list, no shell) in a new session, output to a log file."""
        with self._lock:
            current = self._procs.get(name)
            if current is not None and current[0].poll() is None:
                raise RagtuneError(f"run {name!r} is already running (pid {current[0].pid}); "
                                   "stop it first or pick another name")
            logs = self.workspace / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            log_file = logs / f"finetune-ui-{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
            with open(log_file, "ab") as out:
                out.write(f"$ {command_line(argv)}\n".encode())
                out.flush()
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=self.cwd,
                                        start_new_session=True, preexec_fn=_default_sigint,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
            started = Started(name, proc.pid, log_file, list(argv))
            self._procs[name] = (proc, started)
            return started

    def poll(self, name: str) -> int | None:
        """None while the run started here is alive, else its exit code (NotFound if none)."""
        entry = self._procs.get(name)
        if entry is None:
            raise NotFoundError(f"no run named {name!r} was started from this UI")
        return entry[0].poll()

    def running(self) -> list[str]:
        return [name for name, (proc, _) in self._procs.items() if proc.poll() is None]

    def started(self, name: str) -> Started | None:
        entry = self._procs.get(name)
        return entry[1] if entry else None

    def stop(self, name: str, grace_s: float = 20.0) -> str:
        """Interrupt the run's process group (Ctrl-C: it saves and marks itself stopped);
        terminate, then kill, if it does not end in time. Returns what happened."""
        entry = self._procs.get(name)
        if entry is None:
            raise NotFoundError(f"run {name!r} was not started from this UI; stop it where it "
                                "runs (Ctrl-C), or with `kill` and the pid in its status.json")
        proc = entry[0]
        if proc.poll() is not None:
            return f"run {name!r} had already ended (exit code {proc.returncode})"
        how = "already gone"
        for sig, wait_s, verb in ((signal.SIGINT, grace_s, "interrupted"),
                                  (signal.SIGTERM, 5.0, "terminated"),
                                  (signal.SIGKILL, 5.0, "killed")):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            how = verb
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        return f"stopped run {name!r} ({how}; exit code {proc.wait()})"


def _default_sigint() -> None:
    """In the child: take Ctrl-C again, even when the UI itself was started with SIGINT
    ignored (`ragtune ui &` from a script), so that Stop interrupts the run gracefully."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# ---------------------------------------------------------------------------- reading runs
def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run with its status, step and last losses (newest first)."""
    from finetune.runs import list_runs as summaries

    return summaries(Path(runs_dir))


def loss_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Long-format loss points for a plot: {step, loss, series: train|validation}."""
    from finetune.runs import read_log

    rows = []
    for record in read_log(Path(run_dir) / "trainer_log.jsonl"):
        step = record.get("step")
        if step is None:
            continue
        if record.get("loss") is not None:
            rows.append({"step": step, "loss": float(record["loss"]), "series": "train"})
        if record.get("eval_loss") is not None:
            rows.append({"step": step, "loss": float(record["eval_loss"]),
                         "series": "validation"})
    return rows


def tail(path: Path | None, lines: int = 60, max_bytes: int = 64_000) -> str:
    """The last lines of a log file (progress-bar carriage returns collapsed)."""
    if path is None or not Path(path).is_file():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - max_bytes))
        text = handle.read().decode("utf-8", errors="replace")
    cleaned = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(cleaned[-lines:])


def run_log(run_dir: Path) -> Path | None:
    """The newest log the run itself wrote (train-*.log or console.log)."""
    run_dir = Path(run_dir)
    logs = list(run_dir.glob("train-*.log")) + [p for p in [run_dir / "console.log"]
                                                if p.is_file()]
    return max(logs, key=lambda p: p.stat().st_mtime) if logs else None


def dataset_names(dataset_dir: Path) -> list[str]:
    """Dataset names registered in `<dataset_dir>/dataset_info.json` (empty if none)."""
    try:
        info = json.loads((Path(dataset_dir) / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return sorted(info) if isinstance(info, dict) else []
