"""What bounds the 16-client throughput? One decode step of the embedded SmolLM2-135M for 1 and
16 rows (300 tokens of context each, the buffer cache ragtune's engine uses), with torch's
profiler splitting the step into matrix products, attention and the rest.

    .venv/bin/python bench/bench_batched_step.py [--rows 1,16] [--context 300]

Prints ms per step, the matrix products' share and their GFLOP/s, and the tokens/s ceiling the
step puts on that many concurrent clients. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    import torch
    from torch.profiler import profile
    from transformers import AutoModelForCausalLM

    from serving.kvcache import BufferCache

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path,
                        default=REPO / "workspace/models/smollm2-135m-instruct")
    parser.add_argument("--rows", default="1,16")
    parser.add_argument("--context", type=int, default=300)
    args = parser.parse_args()
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    params = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    params += model.config.vocab_size * model.config.hidden_size  # the (tied) output head
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{params / 1e6:.0f}M parameters in the matrix products")
    print("| rows | ms / step | matrix products ms | attention ms | GFLOP/s | ceiling tok/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for rows in (int(r) for r in args.rows.split(",")):
        ids = torch.randint(0, 1000, (rows, args.context))
        with torch.inference_mode():
            cache = BufferCache()
            model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            nxt, pos = ids[:, -1:], args.context
            for _ in range(3):
                model(nxt, past_key_values=cache, use_cache=True, logits_to_keep=1,
                      position_ids=torch.full((rows, 1), pos))
                pos += 1
            steps = 8
            started = time.perf_counter()
            for _ in range(steps):  # timed without the profiler (it adds its own overhead)
                model(nxt, past_key_values=cache, use_cache=True, logits_to_keep=1,
                      position_ids=torch.full((rows, 1), pos))
                pos += 1
            per_step = (time.perf_counter() - started) / steps
            with profile() as prof:
                for _ in range(steps):
                    model(nxt, past_key_values=cache, use_cache=True, logits_to_keep=1,
                          position_ids=torch.full((rows, 1), pos))
                    pos += 1
        self_ms = {e.key: e.self_cpu_time_total / 1000 / steps for e in prof.key_averages()}
        mm = sum(v for k, v in self_ms.items() if k in ("aten::mm", "aten::addmm", "aten::bmm"))
        attn = sum(v for k, v in self_ms.items() if "scaled_dot_product" in k)
        gflops = 2 * params * rows / (mm / 1000) / 1e9 if mm else 0.0
        print(f"| {rows} | {per_step * 1000:.1f} | {mm:.1f} | {attn:.1f} | {gflops:.0f} | "
              f"{rows / per_step:.0f} |")


if __name__ == "__main__":
    main()
