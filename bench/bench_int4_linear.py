"""Could the embedded model be served as the 4-bit model it ships as, or in 8 bits? One Linear
layer of SmolLM2-135M's shapes, fp32 `F.linear` against torch's int4 weight-only kernel for CPU
(`_weight_int4pack_mm_for_cpu`, tinygemm layout, group size 32) and its int8 weight-only kernel
(`_weight_int8pack_mm`, one scale per output channel, activations stay fp32), as time ratios
in one run.

    .venv/bin/python bench/bench_int4_linear.py [--repeats 300]

Why it matters: the generator ships as Q4_1 GGUF (blocks of 32 weights, w = d*q + m, q in
0..15) and ragtune dequantizes it to fp32, so every decode step reads 8x the bytes the GGUF
holds, and a single-stream step is bandwidth-bound (docs/serving.md, "One decode step").
Q4_1 maps exactly onto the int4 layout (scale d, zero m + 8d): the bench also prints the
largest difference from the fp32 product, to show the representation is lossless. Whether it
is *faster* depends on the CPU's int4 kernel: on the 2-core AVX2 development VM it is not.
Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import time

import torch

GROUP = 32
SHAPES = ((1536, 576), (576, 1536), (576, 576))  # gate/up, down, q/o projections (out, in)


def q4_1_weight(out_features: int, in_features: int, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random weight on a Q4_1 grid: (fp32 weight, int4-packed weight, scales and zeros)."""
    gen = torch.Generator().manual_seed(seed)
    blocks = in_features // GROUP
    q = torch.randint(0, 16, (out_features, in_features), generator=gen, dtype=torch.int32)
    d = torch.rand(out_features, blocks, generator=gen) * 0.01
    m = -torch.rand(out_features, blocks, generator=gen) * 0.08
    weight = (q.view(out_features, blocks, GROUP).float() * d[..., None] + m[..., None]
              ).view(out_features, in_features)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    scales_zeros = torch.stack([d.t(), (m + 8 * d).t()], dim=-1).contiguous()
    return weight, packed, scales_zeros


def timed(fn, repeats: int) -> float:
    for _ in range(10):
        fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| layer (out x in) | rows | fp32 us | int4 us | int4 / fp32 | int4 max diff | "
          "int8 us | int8 / fp32 | int8 rel. error |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for out_f, in_f in SHAPES:
        weight, packed, sz = q4_1_weight(out_f, in_f)
        scales = weight.abs().amax(dim=1) / 127  # per output channel
        int8_weight = torch.round(weight / scales[:, None]).to(torch.int8)
        for rows in (1, 16):
            x = torch.randn(rows, in_f)
            fp32 = timed(lambda: torch.nn.functional.linear(x, weight), args.repeats)
            int4 = timed(lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, GROUP, sz),
                         args.repeats)
            diff = (torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, GROUP, sz)
                    - x @ weight.t()).abs().max().item()
            int8 = timed(lambda: torch.ops.aten._weight_int8pack_mm(x, int8_weight, scales),
                         args.repeats)
            exact = x @ weight.t()
            err8 = ((torch.ops.aten._weight_int8pack_mm(x, int8_weight, scales) - exact).norm()
                    / exact.norm()).item()
            print(f"| {out_f} x {in_f} | {rows} | {fp32 * 1e6:.0f} | {int4 * 1e6:.0f} | "
                  f"{int4 / fp32:.1f} | {diff:.1e} | {int8 * 1e6:.0f} | {int8 / fp32:.2f} | "
                  f"{err8:.1e} |")


if __name__ == "__main__":
    main()
