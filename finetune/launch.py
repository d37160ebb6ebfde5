"""How a run starts: in this process, in the background (`--detach`), or as N data-parallel
processes (`--nproc N`, through torchrun: gloo on CPU, NCCL on GPU).

Child processes are started from an argv list (never a shell) and read the run's
`launch.yaml`: `python -m finetune.launch --config runs/<name>/launch.yaml`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from finetune.config import FinetuneConfig
from finetune.runs import RunPaths, read_status, update_status
from ragtune.errors import RagtuneError, TrainingError

log = logging.getLogger(__name__)

WORKER_ENV = "RAGTUNE_FINETUNE_WORKER"  # set for torchrun workers: the launcher did the checks


def absolute(cfg: FinetuneConfig) -> FinetuneConfig:
    """The config with paths made absolute, so a child in any directory reads the same data."""
    from finetune.train import workspace_of

    ws = workspace_of(cfg)
    changes = {"workspace": ws.root.resolve(), "dataset_dir": (cfg.dataset_dir or ws.datasets_dir).resolve(),
               "detach": False, "overwrite": False}
    for key in ("dataset", "eval_dataset"):
        value = getattr(cfg, key)
        if value:
            parts = [str(Path(p.strip()).resolve()) if Path(p.strip()).exists() else p.strip()
                     for p in value.split(",")]
            changes[key] = ",".join(parts)
    if cfg.model not in ("auto",) and Path(cfg.model).expanduser().is_dir():
        changes["model"] = str(Path(cfg.model).expanduser().resolve())
    return cfg.replace(**changes)


def write_launch_config(cfg: FinetuneConfig, paths: RunPaths) -> Path:
    import yaml

    paths.root.mkdir(parents=True, exist_ok=True)
    tmp = paths.launch_config.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True),
                   encoding="utf-8")
    tmp.replace(paths.launch_config)
    return paths.launch_config


def precheck(cfg: FinetuneConfig) -> tuple[RunPaths, str]:
    """Run state and data checks done once, before any child process starts."""
    from finetune.train import check_run_state, load_examples, workspace_of

    ws = workspace_of(cfg)
    paths = RunPaths(ws.runs_dir / cfg.name)
    state = check_run_state(cfg, paths)
    if state != "finished":
        load_examples(cfg, ws)
    return paths, state


def child_argv(config_file: Path) -> list[str]:
    return [sys.executable, "-m", "finetune.launch", "--config", str(config_file)]


def detach(cfg: FinetuneConfig) -> int:
    """Start the same run in a new session with its output in runs/<name>/console.log."""
    paths, state = precheck(cfg)
    if state == "finished":
        return report_finished(paths)
    config_file = write_launch_config(absolute(cfg), paths)
    with paths.console_log.open("ab") as out:
        proc = subprocess.Popen(child_argv(config_file), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=os.getcwd(), env=os.environ.copy())
    update_status(paths, name=cfg.name, stage=cfg.stage, status="running", pid=proc.pid,
                  message=None)
    print(f"started run {cfg.name!r} in the background (pid {proc.pid})\n"
          f"  follow:  ragtune runs tail {cfg.name}\n"
          f"  list:    ragtune runs\n"
          f"  output:  {paths.console_log}")
    return 0


def torchrun_argv(nproc: int, config_file: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "finetune.launch", "--config", str(config_file)]


def distributed(cfg: FinetuneConfig) -> int:
    """Run `cfg.nproc` data-parallel workers through torchrun and wait for them."""
    paths, state = precheck(cfg)
    if state == "finished":
        return report_finished(paths)
    config_file = write_launch_config(absolute(cfg), paths)
    env = os.environ.copy()
    env[WORKER_ENV] = "1"
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // cfg.nproc)))
    update_status(paths, name=cfg.name, stage=cfg.stage, status="running", pid=os.getpid(),
                  message=None)
    print(f"launching {cfg.nproc} processes: {' '.join(torchrun_argv(cfg.nproc, config_file))}",
          file=sys.stderr)
    code = subprocess.run(torchrun_argv(cfg.nproc, config_file), env=env, check=False).returncode
    status = read_status(paths) or {}
    if code != 0:
        if status.get("status") == "running":
            update_status(paths, status="failed", message=f"torchrun exited with code {code}")
        raise TrainingError(f"run {cfg.name!r}: training processes exited with code {code} "
                            f"({status.get('message') or 'see ' + str(paths.root)})")
    return report_done(paths)


def report_finished(paths: RunPaths) -> int:
    status = read_status(paths) or {}
    print(f"run {paths.name!r} is already finished (step {status.get('step', '?')}); its adapter "
          f"is {paths.adapter}.\nUse --overwrite to train it again, or pick a new --name.")
    return 0


def report_done(paths: RunPaths) -> int:
    status = read_status(paths) or {}
    print(f"run {paths.name!r} finished at step {status.get('step')}\n"
          f"  adapter:   {paths.adapter}\n  loss plot: {paths.loss_png}\n"
          f"  merge:     finetune merge {paths.name}")
    if status.get("message"):
        print(f"  warning:   {status['message']}")
    return 0


def passive_threads() -> None:
    """Let idle OpenMP threads sleep instead of spinning (set before torch loads).

    On a CPU shared with other busy processes, spinning threads steal the cores the working
    ones need: measured here, a 2-thread training step ran 3-4x slower than with PASSIVE.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def launch(cfg: FinetuneConfig) -> int:
    """Start a run the way the config asks: detached, multi-process, or right here."""
    passive_threads()
    from finetune.train import train

    if cfg.detach:
        return detach(cfg)
    worker = os.environ.get(WORKER_ENV) == "1" and "LOCAL_RANK" in os.environ
    if cfg.nproc > 1 and not worker:
        return distributed(cfg)
    result = train(cfg, prechecked=worker)
    if result.status == "already-finished":
        return report_finished(result.paths)
    if int(os.environ.get("RANK", "0")) == 0:
        report_done(result.paths)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m finetune.launch --config FILE`: what detached and torchrun children run."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m finetune.launch")
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        return launch(FinetuneConfig.from_yaml(args.config))
    except RagtuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
