"""Serve block-quantized weights as they ship: GGUF's Q4_1 and Q8_0 grids, exactly, on CPU.

The embedded generator ships as a Q4_1 GGUF (every projection: blocks of 32 weights,
w = d*q + m, q in 0..15) with a Q8_0 token embedding (the tied LM head: w = d*q, q in
-128..127). ragtune dequantizes it to fp32, so a decode step read 8x the bytes the GGUF holds
and a single stream was bound by memory bandwidth (docs/serving.md, "One decode step").
This module finds, per Linear layer, whether its fp32 weight still lies *exactly* on one of
those grids (recovered from the weight itself, verified bit for bit, so no GGUF parsing and
no approximation: a layer that does not reconstruct exactly stays dense), and if so gives it
a packed copy served by a small AVX2/FMA kernel with an AVX-512 path chosen at run time
(`blockquant.cpp`, with `attention.cpp` and `smallops.cpp` for decode attention, RMSNorm and
rotary, sharing `kernels.h`; one extension compiled once on first use with torch's extension
builder) for forwards of up to `max_rows` token rows (the engine: decode steps and prefill
chunks of up to 64 rows).
Longer inputs and anything with gradients keep the fp32 weight and `F.linear`.

Why our own kernel: torch's CPU int4/int8 weight-only kernels (`_weight_int4pack_mm_for_cpu`,
`_weight_int8pack_mm`) measured 6-40x *slower* than fp32 on the 2-core AVX2 VM
(bench/bench_int4_linear.py), and llama.cpp (llama-cpp-python) runs a whole model of its own,
which peft's LoRA layers and the engine's per-row adapters cannot wrap. The results differ from fp32 `F.linear` only by float
summation order (~1e-6).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from ragtune.errors import RagtuneError

log = logging.getLogger(__name__)

BLOCK = 32
SOURCE = Path(__file__).with_name("blockquant.cpp")
# The extension's sources: the products and the bindings, decode attention, RMSNorm/rotary.
SOURCES = [SOURCE, SOURCE.with_name("attention.cpp"), SOURCE.with_name("smallops.cpp")]
HEADERS = [SOURCE.with_name("kernels.h")]  # included by every source


class KernelUnavailable(RagtuneError):
    """The block-quantized kernel cannot be built or run on this machine."""


@functools.lru_cache(maxsize=1)
def kernel() -> Any:
    """Build (once per machine; torch caches it under TORCH_EXTENSIONS_DIR) and load the C++
    kernel. Raises KernelUnavailable on a CPU without AVX2/FMA or without a compiler."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise KernelUnavailable(f"the block kernel needs x86-64 AVX2, not {platform.machine()}")
    if not _has_avx2_fma():
        raise KernelUnavailable("the block kernel needs a CPU with AVX2 and FMA")
    from torch.utils import cpp_extension

    started = time.monotonic()
    log.info("loading the block kernel (compiled once per machine on first use, ~40 s)")
    try:
        module = cpp_extension.load(
            "ragtune_blockquant", [str(path) for path in SOURCES],
            extra_cflags=["-O3", "-mavx2", "-mfma", "-mf16c", _headers_flag()], verbose=False)
    except (OSError, RuntimeError, ImportError) as err:
        raise KernelUnavailable(f"cannot build the block kernel ({SOURCE.name}): {err}") from err
    log.info("block-quantized kernel ready in %.1f s", time.monotonic() - started)
    return module


def _headers_flag() -> str:
    """A define holding the headers' digest. torch's extension versioner hashes the sources and
    the build flags, not the headers they include, so without it an edit of kernels.h alone
    would load the extension built before the edit."""
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in HEADERS)).hexdigest()
    return f"-DRAGTUNE_HEADERS_SHA256={digest[:16]}"


def _has_avx2_fma() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags


@dataclass(frozen=True)
class Packed:
    """A weight on a block grid: codes `q` ([out, in/2] uint8 nibbles for q4, [out, in] int8 for
    q8) and fp16 block scales [out, in/32, 2] (q4: d, m) or [out, in/32, 1] (q8: d), the very
    fp16 values GGUF stores."""

    kind: str
    q: torch.Tensor
    scales: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.q.numel() * self.q.element_size() + self.scales.numel() * 2


def pack(weight: torch.Tensor) -> Packed | None:
    """The exact block form of an fp32 CPU weight [out, in], or None when it is not on a grid."""
    if weight.dtype != torch.float32 or weight.device.type != "cpu" or weight.dim() != 2 \
            or weight.shape[1] % BLOCK:
        return None
    w = weight.detach().reshape(weight.shape[0], -1, BLOCK)
    head = w[:1]  # one output row first: a weight off the grid is rejected without copies
    if _pack_q8(head) is not None:
        return _pack_q8(w) or _pack_q4(w)
    return _pack_q4(w) if _pack_q4(head) is not None else None


def _pack_q4(w: torch.Tensor) -> Packed | None:
    """w = d*q + m with m the block minimum and d = (max - min)/15 rounded to fp16, as
    llama.cpp's Q4_1 quantizer stores them; accepted only if both are fp16 values and d*q + m
    rebuilds w bit for bit (in fp32, the order transformers' dequantizer computes it)."""
    lo, hi = w.amin(-1), w.amax(-1)
    d = ((hi - lo) / 15).half().float()
    if not torch.equal(lo.half().float(), lo):
        return None
    safe = torch.where(d == 0, torch.ones_like(d), d)
    q = torch.round((w - lo[..., None]) / safe[..., None]).clamp_(0, 15)
    if not torch.equal(d[..., None] * q + lo[..., None], w):
        return None
    codes = q.to(torch.uint8)
    packed = (codes[..., :16] | (codes[..., 16:] << 4)).reshape(w.shape[0], -1)
    scales = torch.stack([d, lo], dim=-1).half()
    return Packed("q4", packed.contiguous(), scales.contiguous())


def _pack_q8(w: torch.Tensor) -> Packed | None:
    """w = d*q with d = max|w|/127 rounded to fp16 (Q8_0); exact rebuild required."""
    amax = w.abs().amax(-1)
    d = (amax / 127).half().float()
    safe = torch.where(d == 0, torch.ones_like(d), d)
    q = torch.round(w / safe[..., None])
    if q.abs().max() > 127 or not torch.equal(d[..., None] * q, w):
        return None
    codes = q.to(torch.int8).reshape(w.shape[0], -1)
    return Packed("q8", codes.contiguous(), d[..., None].half().contiguous())


class BlockLinear(nn.Linear):
    """An nn.Linear (so peft wraps it like any other) whose decode-sized inputs run on the
    packed weight; larger inputs (prefill), other dtypes and autograd use the fp32 weight.

    The kernel (which takes any [..., in] input) splits a product over its own helper threads
    only when the calling thread's torch intra-op threads are 1 (the engine's decode steps,
    see `StepThreads`): two spinning thread teams on the same cores (torch's OpenMP one and
    ours) made a step 10x slower.
    """

    packed: Packed
    max_rows: int
    _matmul: Any

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.numel() > self.max_rows * self.in_features or x.numel() == 0 or x.requires_grad
                or x.dtype is not torch.float32 or x.device.type != "cpu"
                or (self.weight.requires_grad and torch.is_grad_enabled())):
            return F.linear(x, self.weight, self.bias)
        y = self._matmul(x, self.packed.q, self.packed.scales)
        return y if self.bias is None else y + self.bias


@dataclass(frozen=True)
class PackReport:
    """What `use_block_kernels` did: layers packed per kind, layers left dense, bytes."""

    packed: dict[str, int]
    dense: int
    dense_bytes: int
    packed_bytes: int

    def __str__(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.packed.items())) or "none"
        return (f"block kernels: {kinds} layers packed ({self.dense_bytes / 2**20:.0f} MiB fp32 "
                f"read as {self.packed_bytes / 2**20:.0f} MiB), {self.dense} left dense")


def use_block_kernels(model: nn.Module, max_rows: int = 16) -> PackReport:
    """Give every Linear layer of `model` whose weight lies exactly on a Q4_1/Q8_0 grid a packed
    copy and the block forward (in place). Call before attaching LoRA adapters. Raises
    KernelUnavailable when the kernel cannot be built here (the caller stays dense)."""
    found: list[tuple[nn.Linear, Packed]] = []
    dense = 0
    for module in model.modules():
        if type(module) is not nn.Linear:
            continue
        packed = pack(module.weight)
        if packed is None:
            dense += 1
        else:
            found.append((module, packed))
    if not found:  # not a grid model: no kernel build, nothing changed
        return PackReport({}, dense, 0, 0)
    module_ = kernel()
    module_.set_threads(max(1, min(torch.get_num_threads(), len(os.sched_getaffinity(0)))))
    counts: dict[str, int] = {}
    dense_bytes = packed_bytes = 0
    for module, packed in found:
        module.__class__ = BlockLinear
        module.packed, module.max_rows, module._matmul = packed, max_rows, module_.matmul
        counts[packed.kind] = counts.get(packed.kind, 0) + 1
        dense_bytes += module.weight.numel() * 4
        packed_bytes += packed.nbytes
    return PackReport(counts, dense, dense_bytes, packed_bytes)


class StepThreads:
    """Torch's intra-op threads per forward of a model with block kernels: 1 for decode-sized
    steps (the kernel's own helpers split the products; torch's OpenMP team, throttled in a
    worker thread, only added wake-ups to the small ops: a 1-row step 31 ms vs 22 ms), the
    original count for prefill chunks, whose dense products need every core. A model without
    block layers is left alone. Note: torch's setting is process-wide for MKL, so a dense
    product in another thread during a decode step (a query embedding) runs on one thread.
    """

    def __init__(self, model: nn.Module) -> None:
        self.rows = max((m.max_rows for m in model.modules() if isinstance(m, BlockLinear)),
                        default=0)
        self.full = torch.get_num_threads()

    def set_for(self, rows: int) -> None:
        """Set the thread count for a forward of `rows` token rows (worker thread only)."""
        if not self.rows:
            return
        want = 1 if rows <= self.rows else self.full
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)
