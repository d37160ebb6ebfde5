"""Exported feedback trains: DPO and KTO steps on the tiny Llama move log p(chosen) up
relative to log p(rejected) (through finetune's own training entry)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragtune.datasets import load_dataset
from feedback.commands import export
from finetune.runs import read_log
from finetune.train import train
from ragtune.settings import load_settings
from tests.feedback.records import fill
from tests.finetune.margins import margin
from tests.finetune.test_train import one_thread, tiny_cfg  # noqa: F401


@pytest.fixture(scope="module")
def exported(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose feedback (made on the tiny Llama) is exported to datasets/."""
    ws = tmp_path_factory.mktemp("fb") / "ws"
    settings = load_settings(workspace=ws, generator=str(tiny_llama_dir))
    fill(settings.paths.feedback_db, str(Path(tiny_llama_dir).resolve()), pairs=4).close()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGTUNE_GENERATOR", str(tiny_llama_dir))  # the configured base model
        assert export(ws) == 0
    return ws


@pytest.mark.parametrize("stage", ["dpo", "kto"])
def test_feedback_training_prefers_the_chosen_answer(stage: str, exported: Path,
                                                     tiny_llama_dir: Path) -> None:
    datasets = load_settings(workspace=exported).paths.datasets_dir
    cfg = tiny_cfg(tiny_llama_dir, Path("unused"), exported, name=f"fb-{stage}", stage=stage,
                   dataset=f"feedback_{stage}", max_steps=8, learning_rate=5e-3,
                   pref_beta=0.1, per_device_batch_size=4, save_steps=100, eval_steps=0,
                   cutoff_len=256)
    result = train(cfg)
    assert result.status == "finished" and result.step == 8
    records = [r for r in read_log(result.paths.trainer_log) if "loss" in r]
    assert records[-1]["loss"] < records[0]["loss"]
    pairs = load_dataset("feedback_dpo", datasets)
    before = margin(tiny_llama_dir, pairs, None)
    after = margin(tiny_llama_dir, pairs, result.paths.adapter)
    assert after > before + 0.3, (before, after)
