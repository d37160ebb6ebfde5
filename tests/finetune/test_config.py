"""FinetuneConfig: every shipped YAML parses; bad values fail naming the field and value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from finetune.config import FinetuneConfig
from ragtune.errors import ConfigError


def shipped_configs(repo_root: Path) -> list[Path]:
    return sorted((repo_root / "configs" / "finetune").glob("*.yaml"))


def test_every_shipped_yaml_parses(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo_root)  # shipped paths are relative to the repository root
    files = shipped_configs(repo_root)
    assert {f.name for f in files} >= {"smollm2-135m-lora.yaml", "deepseek-r1-1.5b-lora.yaml",
                                       "smollm2-135m-dpo.yaml"}
    for path in files:
        cfg = FinetuneConfig.from_yaml(path)
        raw = yaml.safe_load(path.read_text())
        assert cfg.name == raw["name"] == path.stem  # the file name says which run it makes
        for key, value in raw.items():
            got = getattr(cfg, key)
            assert (str(got) if isinstance(got, Path) else got) == value, (path.name, key)
        if cfg.dataset_dir is not None:  # the shipped sample data it names exists
            assert (repo_root / cfg.dataset_dir / "dataset_info.json").is_file(), path.name


def test_cpu_config_fits_the_cpu_budget(repo_root: Path) -> None:
    cfg = FinetuneConfig.from_yaml(repo_root / "configs/finetune/smollm2-135m-lora.yaml")
    assert cfg.model == "embedded:smollm2-135m" and cfg.compute_type == "fp32"
    assert 0 < cfg.max_steps <= 60  # a fixed step budget, not epochs, on a 2-core CPU
    gpu = FinetuneConfig.from_yaml(repo_root / "configs/finetune/deepseek-r1-1.5b-lora.yaml")
    assert gpu.model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    assert (gpu.compute_type, gpu.cutoff_len, gpu.num_train_epochs) == ("bf16", 1024, 3.0)


def test_deepspeed_config_is_zero2_json(repo_root: Path) -> None:
    data = json.loads((repo_root / "configs/deepspeed/zero2.json").read_text())
    assert data["zero_optimization"]["stage"] == 2
    cfg = FinetuneConfig(deepspeed=repo_root / "configs/deepspeed/zero2.json")
    assert cfg.deepspeed.is_file()


def test_overrides_win_over_the_file(repo_root: Path) -> None:
    path = repo_root / "configs/finetune/smollm2-135m-lora.yaml"
    cfg = FinetuneConfig.from_yaml(path, max_steps=4, name="quick", learning_rate=None)
    assert (cfg.max_steps, cfg.name) == (4, "quick")
    assert cfg.learning_rate == yaml.safe_load(path.read_text())["learning_rate"]


@pytest.mark.parametrize(("field", "value", "words"), [
    ("name", "my run", "letters, digits"),
    ("name", "base", "reserved"),
    ("stage", "ppo", "sft, dpo or kto"),
    ("learning_rate", 0.0, "positive"),
    ("learning_rate", 2.0, "too large"),
    ("cutoff_len", 8, "at least 16"),
    ("max_steps", 0, "positive step count"),
    ("val_ratio", 0.9, "between"),
    ("lora_rank", -4, "positive"),
    ("lora_dropout", 1.5, "between"),
    ("compute_type", "int8", "fp32"),
    ("lr_scheduler_type", "cosine_annealing", "one of"),
    ("lora_target", "q_proj; rm -rf", "module names"),
    ("max_samples", 0, "at least 1"),
    ("per_device_batch_size", 0, "positive"),
    ("deepspeed", "/nonexistent/zero9.json", "not found"),
    ("degeneration_samples", -1, "from 0 to 64"),
    ("degeneration_samples", 2.5, "whole number"),
    ("degeneration_max_new_tokens", 0, "from 1 to 512"),
])
def test_bad_values_name_field_and_value(field: str, value: object, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        FinetuneConfig(**{field: value})
    assert info.value.field == field
    assert info.value.value == value
    assert words in str(info.value)


def test_kto_needs_two_rows_per_batch() -> None:
    with pytest.raises(ConfigError) as info:
        FinetuneConfig(stage="kto", per_device_batch_size=1)
    assert info.value.field == "per_device_batch_size" and "KL" in str(info.value)


def test_unknown_yaml_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nlearning_rat: 0.001\n")
    with pytest.raises(ConfigError) as info:
        FinetuneConfig.from_yaml(path)
    assert info.value.field == "learning_rat"
    assert "learning_rate" in str(info.value)  # the suggestion


def test_yaml_lists_and_run_config_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dataset: [a, b.json]\nlora_target: [q_proj, v_proj]\n"
                    "resolved: {model_location: /x}\n")
    cfg = FinetuneConfig.from_yaml(path)
    assert cfg.dataset == "a,b.json" and cfg.lora_target == "q_proj,v_proj"
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(cfg.to_dict()))
    assert FinetuneConfig.from_yaml(again) == cfg
