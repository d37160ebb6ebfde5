"""The CLI edge: every command has help, flags come from typed functions and config
dataclasses, and RagtuneErrors become one-line messages with their exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ragtune.cli import main

COMMANDS = [["models"], ["ingest"], ["search"], ["pairs"], ["serve"], ["ui"], ["eval"],
            ["finetune", "run"], ["finetune", "merge"], ["runs"], ["runs", "tail"],
            ["feedback", "export"], ["feedback", "stats"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out and command[-1] in out


def test_finetune_run_has_a_flag_per_config_field(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    monkeypatch.setenv("COLUMNS", "240")
    monkeypatch.setenv("TERMINAL_WIDTH", "240")

    from finetune.config import FinetuneConfig

    main(["finetune", "run", "--help"])
    out = capsys.readouterr().out
    for field in dataclasses.fields(FinetuneConfig):
        if field.init:
            assert f"--{field.name}" in out


def test_bad_config_value_is_a_one_line_error_naming_the_field(
        workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["finetune", "run", "--learning_rate", "-1", "--workspace", str(workspace)])
    err = capsys.readouterr().err
    assert code == 2
    assert "learning_rate" in err and "-1" in err and "Traceback" not in err


def test_unknown_yaml_field_is_named(tmp_path: Path, workspace: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("name: x\nlearning_rat: 0.1\n")
    assert main(["finetune", "run", "--config", str(cfg), "--workspace", str(workspace)]) == 2
    assert "learning_rat" in capsys.readouterr().err


def test_missing_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search"]) == 2
    assert "query" in capsys.readouterr().err.lower()


def test_console_scripts_short_forms(repo_root: Path) -> None:
    bin_dir = Path(sys.executable).parent
    for script, expected in (("ingest", "ingest"), ("finetune", "run")):
        proc = subprocess.run([str(bin_dir / script), "--help"], capture_output=True, text=True,
                              cwd=repo_root, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert expected in proc.stdout


def test_a_runs_own_config_is_accepted_as_config(tmp_path: Path) -> None:
    from finetune.config import FinetuneConfig
    from ragtune.cli import load_yaml_config

    cfg = tmp_path / "run_config.yaml"
    cfg.write_text("name: x\nmax_steps: 3\nresolved:\n  model_location: /m\n")
    assert load_yaml_config(cfg, FinetuneConfig) == {"name": "x", "max_steps": 3}
