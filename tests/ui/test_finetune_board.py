"""The Fine-tune board: its exact command line (an argv list, never a shell), validation that
names the bad knob, and starting/stopping runs as process groups with a log file."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from ragtune.errors import ConfigError, NotFoundError, RagtuneError
from tests.ui.conftest import Stack, write_finetune_config
from ui.runs import (KNOBS, RunManager, command_line, finetune_argv, knobs_from, loss_rows,
                     tail, validate)

KNOB_VALUES = {"name": "tiny-run", "stage": "sft", "model": "embedded:smollm2-135m",
               "dataset": "demo_sft", "dataset_dir": None, "learning_rate": 3e-4,
               "num_train_epochs": 3.0, "max_steps": 5.0, "lora_rank": 4.0, "lora_alpha": 8,
               "cutoff_len": 128, "per_device_batch_size": 2, "gradient_accumulation_steps": 4}


def test_knobs_come_from_the_config_file(tmp_path: Path) -> None:
    knobs = knobs_from(write_finetune_config(tmp_path))
    assert knobs["name"] == "tiny-run" and knobs["learning_rate"] == 3e-4
    assert knobs["max_steps"] == 5 and knobs["lora_rank"] == 4 and knobs["cutoff_len"] == 128
    assert knobs_from(None)["stage"] == "sft"  # defaults without a file
    assert list(knobs) == list(KNOBS)


def test_argv_is_exact_and_typed(tmp_path: Path) -> None:
    config = Path("configs/finetune/tiny.yaml")
    argv = finetune_argv(config, {**KNOB_VALUES, "dataset_dir": " "}, tmp_path / "ws",
                         python="/venv/bin/python")
    assert argv == ["/venv/bin/python", "-m", "ragtune.cli", "finetune", "run",
                    "--config", "configs/finetune/tiny.yaml",
                    "--name", "tiny-run", "--stage", "sft", "--model", "embedded:smollm2-135m",
                    "--dataset", "demo_sft", "--learning_rate", "0.0003",
                    "--num_train_epochs", "3.0", "--max_steps", "5", "--lora_rank", "4",
                    "--lora_alpha", "8", "--cutoff_len", "128", "--per_device_batch_size", "2",
                    "--gradient_accumulation_steps", "4", "--workspace", str(tmp_path / "ws")]
    assert command_line(["python", "-m", "x", "--name", "a b"]) == "python -m x --name 'a b'"


def test_validation_names_the_bad_knob(tmp_path: Path) -> None:
    config = write_finetune_config(tmp_path)
    assert validate(config, KNOB_VALUES).max_steps == 5
    with pytest.raises(ConfigError, match="lora_rank"):
        finetune_argv(None, {**KNOB_VALUES, "lora_rank": 2.5}, tmp_path)
    with pytest.raises(ConfigError, match="learning_rate"):
        validate(config, {**KNOB_VALUES, "learning_rate": 5.0})
    with pytest.raises(ConfigError, match="reserved"):
        validate(None, {**KNOB_VALUES, "name": "base"})
    with pytest.raises(ConfigError, match="file not found"):
        validate(tmp_path / "missing.yaml", KNOB_VALUES)


SLOW_CHILD = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print("grandchild", child.pid, flush=True)
for step in range(1000):
    print("step", step, flush=True)
    time.sleep(0.2)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


@pytest.fixture()
def stop_leftovers():
    """Register RunManagers; whatever they still run after the test is stopped."""
    managers: list[RunManager] = []
    yield managers.append
    for manager in managers:
        for name in manager.running():
            manager.stop(name, grace_s=2)


def test_start_and_stop_a_process_group_with_a_log(tmp_path: Path, stop_leftovers) -> None:
    manager = RunManager(tmp_path / "ws", cwd=tmp_path)
    stop_leftovers(manager)
    started = manager.start("slow", [sys.executable, "-c", SLOW_CHILD])
    assert os.getpgid(started.pid) == started.pid  # its own session and process group
    with pytest.raises(RagtuneError, match="already running"):
        manager.start("slow", [sys.executable, "-c", SLOW_CHILD])
    deadline = time.monotonic() + 30
    while "step 2" not in tail(started.log_file) and time.monotonic() < deadline:
        time.sleep(0.1)
    log = tail(started.log_file)
    assert log.startswith(f"$ {sys.executable} -c") and "step 2" in log
    grandchild = int(log.split("grandchild ", 1)[1].split()[0])
    assert manager.poll("slow") is None and manager.running() == ["slow"]
    assert manager.stop("slow", grace_s=10) == "stopped run 'slow' (interrupted; exit code -2)"
    assert manager.poll("slow") is not None and manager.running() == []
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)  # the whole group was interrupted
    assert "already ended" in manager.stop("slow")
    with pytest.raises(NotFoundError):
        manager.stop("never-started")


def test_loss_rows_and_tail_read_a_run(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    lines = [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0},
             {"step": 2, "eval_loss": 2.2}]
    (run / "trainer_log.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 3, "lo', encoding="utf-8")
    assert loss_rows(run) == [{"step": 1, "loss": 2.5, "series": "train"},
                              {"step": 2, "loss": 2.0, "series": "train"},
                              {"step": 2, "loss": 2.2, "series": "validation"}]
    (run / "train.log").write_text("a\nb\r50%\rdone\n", encoding="utf-8")
    assert tail(run / "train.log", lines=1) == "done"
    assert tail(run / "missing.log") == ""


@pytest.mark.integration
def test_board_shows_command_and_refuses_bad_knobs(ui_stack: Stack) -> None:
    from gradio_client import Client

    ui = Client(ui_stack.ui_url, verbose=False)
    values = dict(KNOB_VALUES, learning_rate=5.0,
                  dataset_dir=str(ui_stack.workspace / "datasets"))
    status, _ = ui.predict("configs/finetune/tiny.yaml", *[values[k] for k in KNOBS],
                           api_name="/finetune_start")
    assert status.startswith("⚠️") and "learning_rate" in status and "Traceback" not in status
    status = ui.predict("nothing-running", api_name="/finetune_stop")
    assert status.startswith("⚠️") and "not started from this UI" in status


def _write_dataset(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": f"How many days of leave in year {i}?", "input": "",
             "output": f"Employees get {20 + i % 7} days of annual leave."} for i in range(40)]
    (folder / "demo.json").write_text(json.dumps(rows), encoding="utf-8")
    (folder / "dataset_info.json").write_text(json.dumps({"demo_sft": {
        "file_name": "demo.json", "formatting": "alpaca"}}), encoding="utf-8")


@pytest.mark.integration
def test_board_runs_a_tiny_fine_tune_and_stops_it(tmp_path: Path, request: pytest.FixtureRequest,
                                                   stop_leftovers) -> None:
    from ui.finetune import Board

    tiny_llama_dir = request.getfixturevalue("tiny_llama_dir")
    config = tmp_path / "configs" / "finetune" / "tiny.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("logging_steps: 1\nsave_steps: 1000\neval_steps: 0\nval_ratio: 0\n"
                      "packing: false\n", encoding="utf-8")
    workspace = tmp_path / "ws"
    _write_dataset(workspace / "datasets")
    board = Board(workspace, tmp_path)
    stop_leftovers(board.manager)
    values = dict(KNOB_VALUES, name="ui-tiny", model=str(tiny_llama_dir), max_steps=400,
                  cutoff_len=64, per_device_batch_size=1, gradient_accumulation_steps=1,
                  dataset_dir=str(workspace / "datasets"))
    choice = "configs/finetune/tiny.yaml"
    command, problem = board.preview(choice, *[values[k] for k in KNOBS])
    assert problem == "" and "--config configs/finetune/tiny.yaml" in command
    status, _ = board.start(choice, *[values[k] for k in KNOBS])
    assert status.startswith("▶ started run **ui-tiny**"), status
    run_dir = workspace / "runs" / "ui-tiny"
    deadline = time.monotonic() + 150
    while not loss_rows(run_dir) and time.monotonic() < deadline:
        log_file = board.manager.started("ui-tiny").log_file
        assert board.manager.poll("ui-tiny") is None, tail(log_file)
        time.sleep(0.5)
    plot, log, _, _ = board.watch("ui-tiny")
    assert len(plot) >= 1 and set(plot["series"]) == {"train"} and "finetune run" in log
    assert "interrupted" in board.stop("ui-tiny")
    status_file = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    assert status_file["status"] == "stopped"


def test_board_refuses_configs_and_datasets_outside_the_allowed_folders(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from ui.finetune import Board

    root, workspace = tmp_path / "repo", tmp_path / "repo" / "ws"
    write_finetune_config(root)
    _write_dataset(workspace / "datasets")
    outside = tmp_path_factory.mktemp("elsewhere")
    _write_dataset(outside)
    (outside / "evil.yaml").write_text((root / "configs/finetune/tiny.yaml").read_text())
    (root / "data").mkdir()
    (root / "data" / "link").symlink_to(outside, target_is_directory=True)  # resolved: refused
    (workspace / "datasets" / "dataset_info.json").write_text(json.dumps({  # a name -> outside
        "demo_sft": {"file_name": "demo.json"}, "far": {"file_name": str(outside / "demo.json")}}))
    board = Board(workspace, root)
    ok = dict(KNOB_VALUES, dataset_dir=str(workspace / "datasets"))
    command, problem = board.preview("configs/finetune/tiny.yaml", *[ok[k] for k in KNOBS])
    assert problem == "" and command

    cases = [
        (str(outside / "evil.yaml"), ok, "config", outside / "evil.yaml"),
        ("configs/finetune/tiny.yaml", dict(ok, dataset_dir=str(outside)), "dataset_dir",
         outside),
        ("configs/finetune/tiny.yaml", dict(ok, dataset=str(outside / "demo.json")), "dataset",
         outside / "demo.json"),
        ("configs/finetune/tiny.yaml", dict(ok, dataset="data/link/demo.json"), "dataset",
         outside / "demo.json"),
        ("configs/finetune/tiny.yaml", dict(ok, dataset="far"), "dataset", outside / "demo.json"),
    ]
    for choice, values, field, rejected in cases:
        for status in (board.preview(choice, *[values[k] for k in KNOBS])[1],
                       board.start(choice, *[values[k] for k in KNOBS])[0]):
            assert status.startswith("⚠️"), (field, status)
            assert f"`{field}`" in status and str(rejected.resolve()) in status, status
            assert "outside the folders the board may use" in status
    assert board.manager.running() == [] and not (workspace / "runs").exists()
