"""`finetune run` on tiny models: the loss falls, the run directory holds what it promises,
finished runs say so, bad data fails before any model loads, and NaN stops the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from finetune.commands import run, runs, tail
from finetune.config import FinetuneConfig
from finetune.runs import RunPaths, read_log, read_status
from finetune.train import train
from finetune.trainer import NonFiniteLoss
from ragtune.errors import ConfigError, DatasetError

FACTS = [("What is the capital?", "The capital is Lumen City."),
         ("Who runs the reactor?", "Aster Labs runs the Northwind reactor."),
         ("Which policy applies?", "Safety policy 7 applies."),
         ("员工每年有多少天年假？", "员工每年享有十五天带薪年假。")]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and the test machine's cores are shared."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def write_sft(path: Path, n: int = 16, system: str | None = None) -> Path:
    """An alpaca file repeating a few facts (so a tiny model can learn them quickly)."""
    rows = [{"instruction": FACTS[i % len(FACTS)][0], "input": "",
             "output": FACTS[i % len(FACTS)][1], **({"system": system} if system else {})}
            for i in range(n)]
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def tiny_cfg(model: Path, data: Path, workspace: Path, **kw: Any) -> FinetuneConfig:
    """Settings that make a tiny model learn in a dozen steps."""
    base = dict(name="tiny", model=str(model), dataset=str(data), workspace=workspace,
                max_steps=12, learning_rate=1e-2, lora_rank=8, lora_alpha=16, lora_dropout=0.0,
                per_device_batch_size=4, gradient_accumulation_steps=1, cutoff_len=128,
                logging_steps=1, eval_steps=6, save_steps=6, save_total_limit=2, val_ratio=0.0,
                warmup_ratio=0.0, lr_scheduler_type="constant", progress=False)
    base.update(kw)
    return FinetuneConfig(**base)


def losses(paths: RunPaths) -> list[float]:
    return [r["loss"] for r in read_log(paths.trainer_log) if "loss" in r]


def fell(values: list[float], by: float = 0.2) -> bool:
    """The mean of the last 3 losses is `by` nats below the first 3 (a tiny random model's
    tied embeddings cap how far LoRA alone can push its loss down from ln(vocab) ~ 6.4)."""
    return sum(values[-3:]) / 3 < sum(values[:3]) / 3 - by


@pytest.fixture(scope="module")
def llama_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunPaths:
    """One finished tiny-Llama SFT run, shared by the checks below (and by merge/DPO tests)."""
    root = tmp_path_factory.mktemp("llama-run")
    data = write_sft(root / "sft.json", system="You are terse.")
    cfg = tiny_cfg(tiny_llama_dir, data, root / "ws", val_ratio=0.25, packing=True)
    result = train(cfg)
    assert result.status == "finished" and result.step == 12
    return result.paths


def test_tiny_llama_loss_falls_and_outputs_are_written(llama_run: RunPaths) -> None:
    values = losses(llama_run)
    assert len(values) == 12
    assert fell(values)  # a repeated batch is learnt
    assert sorted(p.name for p in llama_run.adapter.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]  # adapter weights only
    ckpts = sorted(p.name for p in llama_run.checkpoints.iterdir())
    assert ckpts == ["checkpoint-12", "checkpoint-6"]
    records = read_log(llama_run.trainer_log)
    assert {"step", "loss", "lr", "tokens", "tokens_per_s"} <= set(records[-2]) | set(records[-1])
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    assert [s for s, _ in evals] == [0, 6, 12]  # before training, then at each interval
    assert evals[-1][1] < evals[0][1]
    assert llama_run.loss_png.stat().st_size > 5000
    assert llama_run.loss_png.read_bytes()[:4] == b"\x89PNG"
    status = read_status(llama_run)
    assert (status["status"], status["step"], status["max_steps"]) == ("finished", 12, 12)
    assert status["shortened"] == {"rows": 12, "dropped_distractors": 0, "passages_dropped": 0,
                                   "truncated": 0}
    assert list(llama_run.root.glob("train-*.log"))
    import yaml

    saved = yaml.safe_load(llama_run.run_config.read_text())
    assert Path(saved["resolved"]["model_location"]).is_dir()
    assert saved["resolved"]["data"]["kept"] == 12 and saved["packing"] is True
    assert FinetuneConfig.from_yaml(llama_run.run_config).name == "tiny"  # reusable as --config


def test_tiny_qwen2_think_template_trains(tiny_qwen2_dir: Path, tmp_path: Path) -> None:
    data = write_sft(tmp_path / "sft.json", n=8)
    cfg = tiny_cfg(tiny_qwen2_dir, data, tmp_path / "ws", name="qwen", max_steps=10,
                   packing=False, save_steps=100)
    result = train(cfg)
    assert fell(losses(result.paths))
    import yaml

    assert yaml.safe_load(result.paths.run_config.read_text())["resolved"]["think_prefix"]


def test_finished_run_says_so(llama_run: RunPaths, capsys: pytest.CaptureFixture) -> None:
    cfg = FinetuneConfig.from_yaml(llama_run.run_config)
    before = llama_run.adapter.joinpath("adapter_model.safetensors").stat().st_mtime_ns
    assert run(cfg) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "--overwrite" in out
    assert llama_run.adapter.joinpath("adapter_model.safetensors").stat().st_mtime_ns == before


def test_changed_settings_refuse_to_resume(llama_run: RunPaths) -> None:
    cfg = FinetuneConfig.from_yaml(llama_run.run_config).replace(lora_rank=4)
    from finetune.runs import update_status

    update_status(llama_run, status="killed-for-test")
    try:
        with pytest.raises(ConfigError) as info:
            train(cfg)
        assert info.value.field == "lora_rank" and "--overwrite" in str(info.value)
    finally:
        update_status(llama_run, status="finished")


def test_runs_lists_and_tail_prints(llama_run: RunPaths, capsys: pytest.CaptureFixture) -> None:
    ws = llama_run.root.parent.parent
    assert runs(json=True, workspace=ws) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["name"], row["status"], row["step"]) == ("tiny", "finished", 12)
    assert row["loss"] > 0 and row["tokens_per_s"] > 0 and row["adapter"]
    assert runs(workspace=ws) == 0
    assert "tiny" in capsys.readouterr().out
    assert tail("tiny", workspace=ws, follow=False) == 0
    out = capsys.readouterr().out
    assert "step 12/12" in out and "finished" in out


def test_bad_row_fails_before_any_model_loads(tmp_path: Path) -> None:
    data = tmp_path / "bad.json"
    data.write_text(json.dumps([{"instruction": "q", "output": "a"}, {"instruction": "q2"}]))
    cfg = FinetuneConfig(name="bad", model=str(tmp_path / "no-such-model"), dataset=str(data),
                         workspace=tmp_path / "ws")
    with pytest.raises(DatasetError) as info:  # not ModelNotFoundError: data is checked first
        run(cfg)
    assert info.value.row == 2 and info.value.field == "output"


def test_preference_data_for_sft_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "pref.json"
    data.write_text(json.dumps([{"instruction": "q", "chosen": "a", "rejected": "b"}]))
    cfg = FinetuneConfig(name="kind", model=str(tmp_path / "none"), dataset=str(data),
                         workspace=tmp_path / "ws")
    with pytest.raises(ConfigError) as info:
        run(cfg)
    assert info.value.field == "dataset" and "--stage sft" in str(info.value)


class PoisonAt(TrainerCallback):
    """Turns one LoRA weight into NaN after step `step` (a diverging run)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs) -> None:
        if state.global_step == self.step:
            param = next(p for n, p in model.named_parameters() if "lora_A" in n)
            with torch.no_grad():
                param.fill_(float("nan"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_llama_dir: Path,
                                                           tmp_path: Path) -> None:
    data = write_sft(tmp_path / "sft.json", n=8)
    cfg = tiny_cfg(tiny_llama_dir, data, tmp_path / "ws", name="nan", save_steps=2, max_steps=8)
    with pytest.raises(NonFiniteLoss) as info:
        train(cfg, callbacks=(PoisonAt(3),))
    message = str(info.value)
    assert "nan" in message.lower() and "checkpoint-2" in message and "learning_rate" in message
    paths = RunPaths(tmp_path / "ws" / "runs" / "nan")
    assert sorted(p.name for p in paths.checkpoints.iterdir()) == ["checkpoint-2"]
    from safetensors.torch import load_file

    weights = load_file(paths.checkpoints / "checkpoint-2" / "adapter_model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    status = read_status(paths)
    assert status["status"] == "failed" and "checkpoint-2" in status["message"]
    assert not paths.adapter.exists()


def test_flat_loss_warns_with_remedies(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_sft(tmp_path / "sft.json", n=8)
    cfg = tiny_cfg(tiny_llama_dir, data, tmp_path / "ws", name="flat", learning_rate=1e-9,
                   max_steps=8, per_device_batch_size=2, save_steps=100)
    result = train(cfg)
    assert result.warning and "did not fall" in result.warning
    assert "--learning_rate" in result.warning and "--max_steps" in result.warning
    assert "did not fall" in read_status(result.paths)["message"]
