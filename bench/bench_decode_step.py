"""Where a single-stream decode step's time goes on this CPU: the options for issue 13's
"fast single stream", measured side by side in one run, as ratios against plain `generate`.

    .venv/bin/python bench/bench_decode_step.py [--tokens 64] [--model DIR] [--no-compile]

Variants, each greedy `generate` of the same chat prompt (embedded SmolLM2-135M by default):
- `eager`: `model.generate` with the default dynamic cache (the plain recipe's step);
- `static`: the static KV cache (`cache_implementation="static"`);
- `compiled`: static cache plus transformers' own `torch.compile` of the decode step
  (`CompileConfig`, allowed on CPU with `_compile_all_devices`); compile time reported apart;
- `int8`: torch's dynamic int8 quantisation of every Linear (fbgemm, per-channel weights),
  with the share of greedy tokens equal to the fp32 ones (quality is the eval table's call);
- `bf16`: the model in bfloat16.
Also prints the machine's matrix-vector memory bandwidth, which bounds an fp32 step from below
(the weights are read once per token). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bandwidth_gbs() -> float:
    """GB/s of a 512 MB fp32 matrix-vector product (memory bound)."""
    import torch

    w, x = torch.randn(8192, 16384), torch.randn(16384)
    for _ in range(2):
        w @ x
    started = time.perf_counter()
    for _ in range(10):
        w @ x
    return w.numel() * 4 * 10 / (time.perf_counter() - started) / 1e9


def tokens_per_s(model, ids, n: int, **kwargs) -> tuple[float, list[int]]:
    import torch

    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, do_sample=False, **kwargs)  # warm-up
        started = time.perf_counter()
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, **kwargs)
        seconds = time.perf_counter() - started
    return n / seconds, out[0, ids.shape[1]:].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--model", default=None, help="model dir (default: the embedded one)")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, CompileConfig

    from ragtune.models import embedded_generator_dir
    from ragtune.settings import load_settings

    path = args.model or str(embedded_generator_dir(load_settings().paths.models_dir)[0])
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Explain in detail how a water level logger works."}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True).input_ids
    out: dict[str, object] = {"threads": torch.get_num_threads(),
                              "bandwidth_gbs": round(bandwidth_gbs(), 1)}
    eager, ref = tokens_per_s(model, ids, args.tokens)
    out["eager_tok_s"] = round(eager, 1)
    static, _ = tokens_per_s(model, ids, args.tokens, cache_implementation="static")
    out["static_x"] = round(static / eager, 2)
    if not args.no_compile:
        config = CompileConfig(fullgraph=False, dynamic=False)
        config._compile_all_devices = True  # transformers compiles on CUDA only unless told
        model.generation_config.compile_config = config
        started = time.perf_counter()
        tokens_per_s(model, ids, 4, cache_implementation="static")
        out["compile_s"] = round(time.perf_counter() - started, 1)
        compiled, _ = tokens_per_s(model, ids, args.tokens, cache_implementation="static")
        out["compiled_x"] = round(compiled / eager, 2)
        model.generation_config.compile_config = None
    qconfig = {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), qconfig)
    speed, tokens = tokens_per_s(int8, ids, args.tokens)
    out["int8_x"] = round(speed / eager, 2)
    out["int8_same_tokens"] = round(sum(a == b for a, b in zip(tokens, ref)) / len(ref), 2)
    del int8
    bf16 = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    out["bf16_x"] = round(tokens_per_s(bf16, ids, args.tokens)[0] / eager, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
