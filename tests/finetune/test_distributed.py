"""`finetune run --nproc 2`: two CPU processes (torchrun, gloo) follow the one-process curve."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from finetune.commands import run
from finetune.runs import RunPaths, read_log, read_status
from finetune.train import train
from tests.finetune.test_train import one_thread, tiny_cfg, write_sft  # noqa: F401 - fixture


@pytest.mark.integration  # two training processes (torchrun-style), ~40 s on a busy CPU
def test_two_process_run_matches_one_process(tiny_llama_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    data = write_sft(tmp_path / "sft.json", n=8)
    ws = tmp_path / "ws"
    # The whole dataset is one global batch, so both runs take the very same steps.
    common = dict(max_steps=5, packing=False, save_steps=5, eval_steps=0, learning_rate=5e-3)
    one = train(tiny_cfg(tiny_llama_dir, data, ws, name="one", per_device_batch_size=8, **common))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = tiny_cfg(tiny_llama_dir, data, ws, name="two", nproc=2, per_device_batch_size=4,
                   **common)
    assert run(cfg) == 0
    assert "finished at step 5" in capsys.readouterr().out
    two = RunPaths(ws / "runs" / "two")
    assert read_status(two)["status"] == "finished"
    resolved = yaml.safe_load(two.run_config.read_text())["resolved"]
    assert resolved["world_size"] == 2
    assert sorted(p.name for p in two.adapter.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    curve_one = [r["loss"] for r in read_log(one.paths.trainer_log) if "loss" in r]
    curve_two = [r["loss"] for r in read_log(two.trainer_log) if "loss" in r]
    assert len(curve_two) == len(curve_one) == 5
    assert curve_two == pytest.approx(curve_one, rel=2e-3)
    tokens = [r["tokens"] for r in read_log(two.trainer_log) if "tokens" in r]
    assert tokens[-1] == [r["tokens"] for r in read_log(one.paths.trainer_log)
                          if "tokens" in r][-1]  # counted over both processes
