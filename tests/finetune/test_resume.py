"""A run killed with SIGKILL resumes from its last checkpoint and ends exactly where an
uninterrupted run ends: same steps, same per-step losses (same data order), same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from finetune.runs import RunPaths, read_log, read_status
from finetune.train import train
from tests.finetune.test_train import one_thread, tiny_cfg, write_sft  # noqa: F401 - fixture

KILLER = """
import os, signal, sys
from transformers import TrainerCallback
from finetune.config import FinetuneConfig
from finetune.train import train

class KillAfterLog(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == int(sys.argv[2]) and logs and "loss" in logs:
            os.kill(os.getpid(), signal.SIGKILL)

train(FinetuneConfig.from_yaml(sys.argv[1]), callbacks=(KillAfterLog(),))
"""


def by_step(paths: RunPaths) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_log(paths.trainer_log) if "loss" in r}


@pytest.mark.integration  # a training subprocess killed and rerun, ~20 s
def test_sigkill_then_same_command_resumes(tiny_llama_dir: Path, tmp_path: Path,
                                           repo_root: Path) -> None:
    data = write_sft(tmp_path / "sft.json", n=8)
    common = dict(max_steps=8, save_steps=4, per_device_batch_size=2, packing=False,
                  lora_dropout=0.1, eval_steps=0, learning_rate=5e-3)
    straight = train(tiny_cfg(tiny_llama_dir, data, tmp_path / "ws", name="straight", **common))

    cfg = tiny_cfg(tiny_llama_dir, data, tmp_path / "ws", name="killed", **common)
    config_file = tmp_path / "killed.yaml"
    config_file.write_text(yaml.safe_dump(cfg.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo_root)}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(config_file), "6"], env=env,
                          cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    paths = RunPaths(tmp_path / "ws" / "runs" / "killed")
    assert read_status(paths)["status"] == "running"  # what a killed process leaves behind
    assert max(by_step(paths)) == 6  # steps 5-6 were logged after checkpoint-4
    assert sorted(p.name for p in paths.checkpoints.iterdir()) == ["checkpoint-4"]
    # A save interrupted half-way (no trainer_state.json) must be skipped, not resumed from.
    partial = paths.checkpoints / "checkpoint-8"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"torn")

    resumed = train(cfg)  # the same command again
    assert resumed.resumed_from == "checkpoint-4"
    assert resumed.step == straight.step == 8
    assert read_status(paths)["status"] == "finished"
    a, b = by_step(straight.paths), by_step(paths)
    assert sorted(a) == sorted(b) == list(range(1, 9))  # log rewound to the checkpoint, no dups
    for step in a:  # every step saw the same batch (data order) with the same weights
        assert b[step] == pytest.approx(a[step], rel=1e-5), step
    wa = load_file(straight.paths.adapter / "adapter_model.safetensors")
    wb = load_file(paths.adapter / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=1e-5)
    tokens = [r["tokens"] for r in read_log(paths.trainer_log) if "tokens" in r]
    assert tokens[-1] == [r["tokens"] for r in read_log(straight.paths.trainer_log)
                          if "tokens" in r][-1]
