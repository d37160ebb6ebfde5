"""Training throughput and memory: ragtune's trainer vs a plain HF Trainer + peft with padding.

    .venv/bin/python bench/bench_train.py [--examples 8] [--cutoff 1024] [--repeat 1]

Same model (the embedded SmolLM2-135M-Instruct), same examples (a seeded sample of the shipped
SFT pairs in data/sft), same LoRA (rank 8, all linear layers), fp32, same learning rate, one pass
over the examples, checkpoints off. The baseline is the path LLaMA-Factory takes: examples
padded to the longest in the batch (DataCollatorForSeq2Seq, multiple of 8), prompt tokens
masked with -100, loss (and logits for every position) from the model. ragtune packs examples
into rows of `cutoff` tokens (position ids restart per example, no attention across them) and
computes logits only where an answer token is predicted.

Each side runs in its own subprocess, so peak RSS is its own: "peak RSS" is the process's
high-water mark, "train RSS" the high-water mark after the model was loaded (reset through
/proc/self/clear_refs). tokens/s counts real (non-padding) tokens per second of training.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def sample_examples(n: int, seed: int = 0) -> list:
    from ragtune.datasets import load_datasets

    examples = load_datasets("ragtune_sft", REPO / "data" / "sft")
    random.Random(seed).shuffle(examples)
    return examples[:n]


def model_dir() -> str:
    from ragtune.models import embedded_generator_dir

    path, _ = embedded_generator_dir(REPO / ".cache" / "test-models")
    return str(path)


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ragtune(args: argparse.Namespace, examples: list, location: str) -> dict:
    """ragtune's own Trainer set-up (finetune.train), packing on."""
    from finetune.config import FinetuneConfig
    from finetune.runs import RunPaths
    from finetune.data import build_sft
    from finetune.train import load_model, load_tokenizer, make_trainer

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    tokenizer = load_tokenizer(location)
    cfg = FinetuneConfig(name="bench", model=location, workspace=tmp, cutoff_len=args.cutoff,
                         packing=True, per_device_batch_size=args.rows, max_steps=1,
                         gradient_accumulation_steps=1, learning_rate=2e-4, lora_dropout=0.0,
                         save_steps=10_000, eval_steps=0, logging_steps=5, progress=False)
    data = build_sft(cfg, tokenizer, examples, [])
    steps = -(-len(data.train) // args.rows)
    cfg = cfg.replace(max_steps=steps)
    model = load_model(location, "fp32", cfg, None)
    paths = RunPaths(tmp / "runs" / "bench")
    paths.root.mkdir(parents=True)
    trainer, _ = make_trainer(cfg, paths, model, data, "fp32")
    tracked = reset_peak_rss()
    cpu = time.process_time()
    out = trainer.train()
    return {"steps": steps, "rows": len(data.train), "seconds": out.metrics["train_runtime"],
            "cpu_seconds": time.process_time() - cpu,
            "real_tokens": data.stats.tokens,  # padding-free: every computed token is real
            "computed_tokens": sum(len(e["input_ids"]) for r in data.train.rows
                                   for e in r["examples"]),
            "loss": out.metrics["train_loss"], "train_rss_tracked": tracked}


def run_baseline(args: argparse.Namespace, examples: list, location: str) -> dict:
    """Plain Trainer + peft, padded batches, full logits: LLaMA-Factory's SFT path."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer,
                              TrainingArguments)

    from finetune.encode import encode_sft
    from finetune.train import load_tokenizer

    tokenizer = load_tokenizer(location)
    encoded, stats = encode_sft(examples, tokenizer, args.cutoff)
    features = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e), "labels": e.labels}
                for e in encoded]
    collator = DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, label_pad_token_id=-100)
    batches = [collator(features[i:i + args.batch]) for i in range(0, len(features), args.batch)]
    torch.manual_seed(42)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    steps = len(batches)
    targs = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="bench-base-"),
                              per_device_train_batch_size=args.batch, max_steps=steps,
                              learning_rate=2e-4, logging_steps=5, save_strategy="no",
                              report_to="none", disable_tqdm=True, use_cpu=True,
                              dataloader_pin_memory=False, seed=42)
    trainer = Trainer(model=model, args=targs, train_dataset=features, data_collator=collator)
    tracked = reset_peak_rss()
    cpu = time.process_time()
    out = trainer.train()
    return {"steps": steps, "rows": len(features), "seconds": out.metrics["train_runtime"],
            "cpu_seconds": time.process_time() - cpu,
            "real_tokens": stats.tokens,
            "computed_tokens": sum(int(b["input_ids"].numel()) for b in batches),
            "loss": out.metrics["train_loss"], "train_rss_tracked": tracked}


def child(args: argparse.Namespace) -> None:
    import logging

    logging.disable(logging.WARNING)
    examples = sample_examples(args.examples)
    location = model_dir()
    result = (run_ragtune if args.child == "ragtune" else run_baseline)(args, examples, location)
    result.update(tokens_per_s=result["real_tokens"] / result["seconds"],
                  tokens_per_cpu_s=result["real_tokens"] / result["cpu_seconds"],
                  peak_rss_mb=rss_mb("VmHWM") if result["train_rss_tracked"] else None,
                  process_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print("RESULT " + json.dumps(result))


def measure(mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--examples", str(args.examples),
           "--cutoff", str(args.cutoff), "--batch", str(args.batch), "--rows", str(args.rows)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=8, help="SFT pairs trained (one pass)")
    parser.add_argument("--cutoff", type=int, default=1024, help="cutoff_len / packed row length")
    parser.add_argument("--batch", type=int, default=2,
                        help="baseline examples per step (2: LLaMA-Factory web UI default)")
    parser.add_argument("--rows", type=int, default=2, help="ragtune packed rows per step")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side (best is kept)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per side (1: steady figures on a shared machine)")
    parser.add_argument("--child", choices=["ragtune", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    model_dir()  # convert the embedded GGUF once, before the children look for it
    started = time.perf_counter()
    results = {}
    for mode in ["baseline", "ragtune"] * args.repeat:
        r = measure(mode, args)
        if mode not in results or r["tokens_per_cpu_s"] > results[mode]["tokens_per_cpu_s"]:
            results[mode] = r
    print(f"SmolLM2-135M LoRA r8 all-linear fp32, {args.examples} SFT pairs from data/sft, "
          f"cutoff {args.cutoff}, {args.threads} thread(s) per side, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'trainer':26} {'steps':>5} {'real tok':>9} {'computed':>9} {'tok/s':>7} "
          f"{'tok/cpu-s':>9} {'train RSS MB':>12} {'peak RSS MB':>11} {'loss':>6}")
    names = {"baseline": f"HF Trainer+peft, pad (b{args.batch})",
             "ragtune": f"ragtune, packed ({args.rows}x{args.cutoff})"}
    for mode in ("baseline", "ragtune"):
        r = results[mode]
        train_rss = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "-"
        print(f"{names[mode]:26} {r['steps']:>5} {r['real_tokens']:>9} {r['computed_tokens']:>9} "
              f"{r['tokens_per_s']:>7.1f} {r['tokens_per_cpu_s']:>9.1f} {train_rss:>12} "
              f"{r['process_peak_rss_mb']:>11.0f} "
              f"{r['loss']:>6.3f}")
    base, ours = results["baseline"], results["ragtune"]
    print(f"ratio ragtune/baseline: tokens/s {ours['tokens_per_s'] / base['tokens_per_s']:.2f}x, "
          f"tokens/cpu-s {ours['tokens_per_cpu_s'] / base['tokens_per_cpu_s']:.2f}x, "
          f"peak RSS {ours['process_peak_rss_mb'] / base['process_peak_rss_mb']:.2f}x"
          + (f", train RSS {ours['peak_rss_mb'] / base['peak_rss_mb']:.2f}x"
             if ours["peak_rss_mb"] and base["peak_rss_mb"] else "")
          + f"  ({time.perf_counter() - started:.0f}s)")


if __name__ == "__main__":
    main()
