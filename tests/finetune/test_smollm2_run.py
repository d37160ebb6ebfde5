"""The real embedded SmolLM2 end to end: a detached run on the shipped pairs is killed with
SIGKILL, the same command resumes it, `runs` shows it, and the merged model loads in transformers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from finetune.commands import merge, run, runs
from finetune.config import FinetuneConfig
from finetune.runs import RunPaths, effective_status, read_log, read_status
from finetune.train import train

pytestmark = pytest.mark.integration


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_detached_run_killed_resumed_and_merged(embedded_generator_dir: Path, repo_root: Path,
                                                tmp_path: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo_root)
    ws = tmp_path / "ws"
    cfg = FinetuneConfig.from_yaml(
        repo_root / "configs/finetune/smollm2-135m-lora.yaml", name="smol",
        model=str(embedded_generator_dir), workspace=ws, max_samples=12, max_eval_samples=2,
        cutoff_len=256, max_steps=6, save_steps=2, eval_steps=6, logging_steps=1,
        gradient_accumulation_steps=1, detach=True)
    assert run(cfg) == 0
    assert "ragtune runs tail smol" in capsys.readouterr().out
    paths = RunPaths(ws / "runs" / "smol")
    pid = read_status(paths)["pid"]
    try:
        wait_for(lambda: (paths.checkpoints / "checkpoint-2" / "trainer_state.json").is_file(),
                 600, "the first checkpoint")
    finally:
        os.kill(pid, signal.SIGKILL)  # the process this test started
    wait_for(lambda: effective_status(read_status(paths)) == "killed", 30, "the kill")
    assert runs(json=True, workspace=ws) == 0
    assert '"status": "killed"' in capsys.readouterr().out
    assert paths.console_log.stat().st_size > 0

    result = train(cfg.replace(detach=False))  # the same command, in the foreground this time
    assert result.resumed_from in ("checkpoint-2", "checkpoint-4") and result.step == 6
    records = read_log(paths.trainer_log)
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 7))
    assert any("eval_loss" in r for r in records) and paths.loss_png.is_file()
    assert read_status(paths)["status"] == "finished"

    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert merge("smol", workspace=ws) == 0
    out = ws / "models" / "smol-merged"
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the TW-40?"}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    with torch.no_grad():
        text = tok.decode(model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:])
    assert text.strip()
