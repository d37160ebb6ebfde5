"""The degeneration watch on tiny-Llama runs: degenerate validation answers are counted beside
the loss (log, trainer_log.jsonl, status.json, loss.png), and a run whose answers collapse
keeps its best checkpoint as the adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from finetune.runs import RunPaths, read_log, read_status
from finetune.train import train
from finetune.watch import collapse_step, collapsed, keep_best
from tests.finetune.test_train import llama_run, one_thread, tiny_cfg, write_sft  # noqa: F401


def test_counts_are_logged_beside_the_loss(llama_run: RunPaths) -> None:
    evals = [r for r in read_log(llama_run.trainer_log) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 6, 12]
    assert [r["eval_degenerate"] for r in evals] == [4, 4, 0]  # empty, loops, the facts
    assert evals[-1]["eval_degenerate"] == 0  # the learnt facts come back verbatim
    status = read_status(llama_run)
    assert status["degenerate"] == 0 and status["degenerate_samples"] == 4
    assert status["degenerated_at"] is None and status["kept_checkpoint"] is None


def adapter_weights(directory: Path) -> dict:
    return load_file(directory / "adapter_model.safetensors")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


@pytest.fixture(scope="module")
def collapsed_run(llama_run: RunPaths, tiny_llama_dir: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> RunPaths:
    """From the learnt SFT adapter (good answers at step 0), a huge learning rate wrecks them."""
    data = write_sft(tmp_path_factory.mktemp("collapse") / "sft.json", system="You are terse.")
    cfg = tiny_cfg(tiny_llama_dir, data, llama_run.root.parent.parent, name="collapse",
                   adapter="tiny", val_ratio=0.25, learning_rate=0.5, max_steps=6, eval_steps=2,
                   save_steps=2, save_total_limit=3)
    result = train(cfg)
    assert "DEGENERATE ANSWERS" in result.warning
    return result.paths


def test_a_collapsing_run_says_so_and_keeps_the_good_start(collapsed_run: RunPaths,
                                                           llama_run: RunPaths) -> None:
    history = [(r["step"], r["eval_degenerate"]) for r in read_log(collapsed_run.trainer_log)
               if "eval_degenerate" in r]
    assert history[0] == (0, 0) and collapse_step(history, 4) == 2
    status = read_status(collapsed_run)
    assert status["degenerated_at"] == 2 and status["kept_checkpoint"] == "start"
    assert "DEGENERATE ANSWERS" in status["message"] and status["status"] == "finished"
    assert same(adapter_weights(collapsed_run.adapter), adapter_weights(llama_run.adapter))
    assert collapsed_run.loss_png.stat().st_size > 5000


def test_keep_best_picks_fewest_degenerate_then_lowest_loss(collapsed_run: RunPaths) -> None:
    """The same run's real checkpoints, with the watch's counts rewritten: checkpoint-4 wins."""
    counts = {0: 0, 2: 4, 4: 1, 6: 3}
    records = read_log(collapsed_run.trainer_log)
    for r in records:
        if "eval_degenerate" in r:
            r["eval_degenerate"] = counts[r["step"]]
    collapsed_run.trainer_log.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert sorted(p.name for p in collapsed_run.checkpoints.iterdir()) == [
        "checkpoint-2", "checkpoint-4", "checkpoint-6"]
    fields = keep_best(collapsed_run, 4, final_step=6)  # no start adapter to fall back to
    assert (fields["degenerated_at"], fields["kept_checkpoint"]) == (2, "checkpoint-4")
    assert same(adapter_weights(collapsed_run.adapter),
                adapter_weights(collapsed_run.checkpoints / "checkpoint-4"))
    assert sorted(p.name for p in collapsed_run.adapter.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    assert not collapsed(history=[(0, 4), (2, 4)], samples=4)  # never good: no collapse


def test_the_watch_looks_at_retrieval_prompts_first(tiny_llama_dir: Path) -> None:
    """Serving's failure shows on prompts with passages, so those are the ones watched."""
    from transformers import AutoTokenizer

    from finetune.data import watch_prompts
    from finetune.encode import chat_ids
    from ragtune.datasets import SFTExample

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)

    def ex(user: str) -> SFTExample:
        return SFTExample([{"role": "user", "content": user},
                           {"role": "assistant", "content": "27 days [1]"}])

    plain = [ex(f"Question {i}?") for i in range(3)]
    context = [ex(f"Context:\n[1] leave.md\nFull-time staff get 27 days.\n\nQuestion: {i}?")
               for i in range(2)]
    prompts = watch_prompts(tok, plain + context, 3)
    expected = [chat_ids(tok, e.messages[:-1], add_generation_prompt=True)
                for e in (*context, plain[0])]
    assert prompts == expected
