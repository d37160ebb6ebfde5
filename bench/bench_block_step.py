"""One decode step of SmolLM2-135M on its block-quantized weights vs the dense fp32 model.

The embedded generator's weights lie exactly on GGUF's Q4_1/Q8_0 grids; `serving.blockquant`
serves them packed (106 MB read per step instead of 513 MB). This bench times a decode step as
the engine runs it, in a worker thread with one torch thread for the block model (the engine's
`StepThreads`) and the default threads for the dense one, for 1, 4 and 16 rows of ~40 tokens
of context, plus the products alone (the time inside the block layers), as ratios in one run.

    .venv/bin/python bench/bench_block_step.py [--steps 30]

Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPT = "Give me three short tips about keeping a laboratory notebook at work, please."


def step_ms(model, tokenizer, rows: int, steps: int, threads: int) -> float:
    """Mean ms of a greedy decode step for `rows` rows, timed in a fresh worker thread."""
    from transformers import DynamicCache

    result: list[float] = []

    def work() -> None:
        torch.set_num_threads(threads)
        ids = tokenizer([PROMPT] * rows, return_tensors="pt").input_ids
        with torch.inference_mode():
            cache = DynamicCache()
            nxt = model(ids, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
            for i in range(steps + 3):
                if i == 3:
                    started = time.perf_counter()
                out = model(nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
                nxt = out.logits[:, -1:].argmax(-1)
        result.append((time.perf_counter() - started) / steps * 1000)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    return result[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--model", default=None, help="model dir (default: the embedded one)")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragtune.models import embedded_generator_dir
    from ragtune.settings import load_settings
    from serving.blockquant import use_block_kernels

    location = args.model or str(embedded_generator_dir(load_settings().paths.models_dir)[0])
    tokenizer = AutoTokenizer.from_pretrained(location)
    dense = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32).eval()
    block = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32).eval()
    print(use_block_kernels(block))
    full = torch.get_num_threads()
    print(f"{location}, torch threads {full}, {args.steps} steps per figure")
    for rows in (1, 4, 16):
        slow = step_ms(dense, tokenizer, rows, args.steps, full)
        fast = step_ms(block, tokenizer, rows, args.steps, 1)
        print(f"{rows:2d} rows: dense {slow:6.1f} ms  block {fast:6.1f} ms  "
              f"{slow / fast:4.2f}x  ({rows * 1000 / fast:5.1f} tok/s)")


if __name__ == "__main__":
    main()
