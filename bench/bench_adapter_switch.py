"""Does a loaded adapter slow down the base model's requests? One stream, greedy, the embedded
SmolLM2-135M: plain `generate`, the engine without adapters, and the engine with the workspace's
tuned adapter loaded (asked for "base" and for the adapter), as tokens/s ratios in one run.

    .venv/bin/python bench/bench_adapter_switch.py [--adapter DIR] [--tokens 64]

Why: with peft, "base" requests run with the LoRA layers disabled. peft's `disable_adapter()`
context recomputes the model's status on every entry (about 90 ms here, more than a decode
step), so entering it per step halved the base model's speed as soon as one adapter was loaded
(before the fix: 0.44x plain). The engine now switches the layers only when the wanted model
changes. Run it on an idle machine, after `make demo` (it needs the tuned adapter).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPT = [{"role": "user", "content": "Explain in detail how a water level logger works and "
                                      "how to calibrate it."}]


def plain_tokens_per_s(model_dir: Path, tokens: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=4, do_sample=False)
        started = time.perf_counter()
        model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return tokens / (time.perf_counter() - started)


def engine_tokens_per_s(model_dir: Path, adapters: dict[str, Path], model: str,
                        tokens: int) -> float:
    from ragtune.types import GenerationRequest
    from serving.config import EngineConfig
    from serving.engine import TransformersGenerator

    gen = TransformersGenerator.load(str(model_dir), adapters,
                                     EngineConfig(max_batch_size=16, repeat_guard_tokens=0))
    try:
        request = GenerationRequest(PROMPT, model, tokens, 0.0, 1.0, [], None)
        gen.complete(request)
        started = time.perf_counter()
        result = gen.complete(request)
        return result.completion_tokens / (time.perf_counter() - started)
    finally:
        gen.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path,
                        default=REPO / "workspace/models/smollm2-135m-instruct")
    parser.add_argument("--adapter", type=Path,
                        default=REPO / "workspace/runs/smollm2-135m-lora/adapter")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    for need, what in ((args.model / "config.json", "the converted embedded model"),
                       (args.adapter / "adapter_config.json", "the tuned adapter")):
        if not need.is_file():
            sys.exit(f"bench_adapter_switch: {need} is missing ({what}); run `make demo` first")
    plain = plain_tokens_per_s(args.model, args.tokens)
    rows = [("plain generate", plain),
            ("engine, no adapter", engine_tokens_per_s(args.model, {}, "base", args.tokens)),
            ("engine, adapter loaded, base asked",
             engine_tokens_per_s(args.model, {"tuned": args.adapter}, "base", args.tokens)),
            ("engine, adapter loaded, adapter asked",
             engine_tokens_per_s(args.model, {"tuned": args.adapter}, "tuned", args.tokens))]
    print("| configuration | tok/s | vs plain |")
    print("|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} | {rate / plain:.2f}x |")


if __name__ == "__main__":
    main()
