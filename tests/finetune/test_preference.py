"""`finetune run --stage dpo|kto` from an SFT adapter: the chosen reply gains on the rejected."""

from __future__ import annotations

import json
from pathlib import Path

from ragtune.datasets import load_dataset
from finetune.runs import RunPaths, read_log, read_status
from finetune.train import train
from tests.finetune.margins import margin
from tests.finetune.test_train import FACTS, llama_run, one_thread, tiny_cfg  # noqa: F401

WRONG = ["The capital is Marrowick.", "Nobody runs it.", "Policy 2 applies.", "员工没有年假。"]


def write_pairs(path: Path, n: int = 8) -> Path:
    rows = [{"instruction": FACTS[i % 4][0], "system": "You are terse.",
             "chosen": FACTS[i % 4][1], "rejected": WRONG[i % 4]} for i in range(n)]
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def test_dpo_from_sft_adapter(llama_run: RunPaths, tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "pairs.json")
    ws = llama_run.root.parent.parent
    cfg = tiny_cfg(tiny_llama_dir, data, ws, name="tiny-dpo", stage="dpo", adapter="tiny",
                   max_steps=8, learning_rate=5e-3, pref_beta=0.1, per_device_batch_size=4,
                   save_steps=4, eval_steps=0)
    result = train(cfg)
    assert result.status == "finished" and result.step == 8
    records = [r for r in read_log(result.paths.trainer_log) if "loss" in r]
    assert abs(records[0]["rewards/margins"]) < 1e-4  # policy == reference (the SFT adapter)
    assert records[-1]["rewards/margins"] > 0.05 and records[-1]["rewards/accuracies"] == 1.0
    assert records[-1]["loss"] < records[0]["loss"]
    pairs = load_dataset(str(data))
    before = margin(tiny_llama_dir, pairs, llama_run.adapter)
    after = margin(tiny_llama_dir, pairs, result.paths.adapter)
    assert after > before + 0.5  # chosen log-prob rose relative to rejected
    assert sorted(p.name for p in result.paths.adapter.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    assert (result.paths.checkpoints / "checkpoint-8").is_dir()
    assert read_status(result.paths)["stage"] == "dpo" and result.paths.loss_png.is_file()


def test_kto_from_preference_pairs(llama_run: RunPaths, tiny_llama_dir: Path,
                                   tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "pairs.json")
    ws = llama_run.root.parent.parent
    cfg = tiny_cfg(tiny_llama_dir, data, ws, name="tiny-kto", stage="kto", adapter="tiny",
                   max_steps=6, learning_rate=5e-3, per_device_batch_size=4, save_steps=100,
                   eval_steps=0)
    result = train(cfg)
    records = [r for r in read_log(result.paths.trainer_log) if "loss" in r]
    assert records[-1]["loss"] < records[0]["loss"]
    assert records[-1]["rewards/chosen"] > records[-1]["rewards/rejected"]
    assert "kl" in records[-1]
