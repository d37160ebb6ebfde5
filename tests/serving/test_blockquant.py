"""Block-quantized kernels (serving.blockquant): weights on GGUF's Q4_1/Q8_0 grids are found
exactly and served packed; the products match fp32 `F.linear`; a grid-exact tiny model
served by the engine with block kernels answers token for token what plain transformers
(dense fp32, + peft) generates, with and without a LoRA adapter."""

from __future__ import annotations

import threading

import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from ragtune.errors import ConfigError
from ragtune.types import GenerationRequest
from serving.blockquant import BlockLinear, StepThreads, kernel, pack, use_block_kernels
from serving.config import EngineConfig
from serving.engine import TransformersGenerator
from tests.serving_fixtures import reference_output
from tests.tiny_models import build_model, snap_to_gguf_grid


# The vector code paths this CPU runs (AVX-512 where it has it, AVX2 always).
with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as _info:
    ISAS = ["avx2", "avx512"] if " avx512f" in _info.read() else ["avx2"]


@pytest.fixture(params=ISAS)
def isa(request):
    """Run a test on one vector code path, then restore the kernel's own choice."""
    before = kernel().isa()
    kernel().set_isa(request.param)
    yield request.param
    kernel().set_isa(before)


def q4_weight(out: int, inp: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (out, inp // 32, 32), generator=gen).float()
    d = (torch.rand(out, inp // 32, generator=gen) * 0.02).half().float()
    m = (-torch.rand(out, inp // 32, generator=gen) * 0.1).half().float()
    q[..., 0], q[..., 1] = 0, 15  # every block spans its whole range, as llama.cpp's do
    return (d[..., None] * q + m[..., None]).view(out, inp)


def q8_weight(out: int, inp: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-127, 128, (out, inp // 32, 32), generator=gen).float()
    q[..., 0] = 127
    d = (torch.rand(out, inp // 32, generator=gen) * 0.01).half().float()
    return (d[..., None] * q).view(out, inp)


def block_linear(weight: torch.Tensor, max_rows: int = 16) -> BlockLinear:
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    report = use_block_kernels(torch.nn.Sequential(layer), max_rows=max_rows)
    assert sum(report.packed.values()) == 1 and report.dense == 0
    assert isinstance(layer, BlockLinear)
    return layer


def test_grids_are_recognised_exactly_and_other_weights_are_not() -> None:
    assert pack(q4_weight(48, 96)).kind == "q4"
    assert pack(q8_weight(48, 96)).kind == "q8"
    assert pack(torch.randn(48, 96)) is None  # not on a grid: stays dense
    assert pack(q4_weight(48, 96) + 1e-7) is None  # nearly on a grid is not enough
    assert pack(torch.randn(48, 40)) is None  # in_features not a multiple of 32
    assert pack(q4_weight(48, 96).double()) is None
    packed = pack(q4_weight(48, 96))
    assert packed.q.shape == (48, 48) and packed.scales.shape == (48, 3, 2)
    assert packed.nbytes < q4_weight(48, 96).numel() * 4 / 5


@pytest.mark.parametrize("make", [q4_weight, q8_weight], ids=["q4", "q8"])
@pytest.mark.parametrize("threads", [1, 2])
def test_products_match_fp32_for_every_decode_row_count(make, threads, isa) -> None:
    weight = make(200, 160, seed=3)  # 200 columns: the helpers' split is not a multiple of 8
    layer = block_linear(weight)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # 1: the kernel's helpers split it; 2: the caller alone
    try:
        for rows in (1, 2, 3, 4, 5, 7, 8, 13, 16):
            x = torch.randn(rows, 160, generator=torch.Generator().manual_seed(rows))
            with torch.inference_mode():
                got = layer(x)
            torch.testing.assert_close(got, F.linear(x, weight), rtol=1e-5, atol=1e-5)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("make", [q4_weight, q8_weight], ids=["q4", "q8"])
def test_long_inputs_taken_in_chunks_match_fp32(make, isa) -> None:
    """K = 1568 (49 blocks: three chunks of 16 and one block): tiles of 16 rows and more
    sum their chunks; 8-row tiles and single rows take whole columns."""
    weight = make(40, 1568, seed=4)
    layer = block_linear(weight, max_rows=64)
    for rows in (8, 16, 21, 37):
        x = torch.randn(rows, 1568, generator=torch.Generator().manual_seed(rows))
        with torch.inference_mode():
            got = layer(x)
        torch.testing.assert_close(got, F.linear(x, weight), rtol=1e-4, atol=1e-4)


def test_prefill_sized_inputs_and_autograd_use_the_fp32_weight() -> None:
    weight = q4_weight(64, 96)
    layer = block_linear(weight, max_rows=4)
    x = torch.randn(2, 5, 96)  # 10 rows > max_rows: the dense path, bit for bit
    with torch.inference_mode():
        assert torch.equal(layer(x), F.linear(x, weight))
    x = torch.randn(3, 96, requires_grad=True)
    layer(x).sum().backward()  # training never sees the kernel
    assert x.grad is not None and layer.weight.grad is not None


def test_products_from_many_threads_at_once_are_all_right() -> None:
    weight = q8_weight(256, 128)
    layer = block_linear(weight)
    xs = [torch.randn(3, 128, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    errors: list[str] = []

    def work(x: torch.Tensor) -> None:
        torch.set_num_threads(1)  # every caller wants the helpers: one gets them, others wait
        with torch.inference_mode():
            for _ in range(50):
                if not torch.allclose(layer(x), F.linear(x, weight), atol=1e-5):
                    errors.append("mismatch")

    threads = [threading.Thread(target=work, args=(x,)) for x in xs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_a_grid_exact_tiny_model_is_packed_whole_and_generates_the_same() -> None:
    dense, block = build_model(seed=5), build_model(seed=5)
    snap_to_gguf_grid(dense)
    block.load_state_dict(dense.state_dict())
    report = use_block_kernels(block)
    assert report.packed == {"q4": 14, "q8": 1} and report.dense == 0  # 7 per layer + head
    ids = torch.tensor([[5, 17, 33, 2, 90, 41]])
    with torch.inference_mode():
        want = dense.generate(ids, max_new_tokens=12, do_sample=False)
        got = block.generate(ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(got, want)
    threads = StepThreads(block)
    assert threads.rows == 16 and StepThreads(dense).rows == 0


@pytest.mark.parametrize("model", ["base", "tuned"])
def test_the_engine_on_block_kernels_answers_what_dense_transformers_does(grid_model,
                                                                         model) -> None:
    base, adapter = grid_model
    gen = TransformersGenerator.load(str(base), {"tuned": adapter}, EngineConfig(
        max_batch_size=4, prefill_chunk_tokens=8,
        repeat_guard_tokens=0, repeat_ban=False, weight_kernel="block"))
    try:
        assert any(isinstance(m, BlockLinear) for m in gen.model.modules())
        prompts = ["What is the capital?", "hi", "Tell me about the reactor safety policy."]
        requests = [GenerationRequest([{"role": "user", "content": p}], model, 10)
                    for p in prompts]
        jobs = [gen.submit(r) for r in requests]  # decoded together: 1-3 rows per step
        for request, job in zip(requests, jobs, strict=True):
            want = reference_output(base, adapter if model == "tuned" else None,
                                    request.messages, request.max_new_tokens)
            assert job.future.result(timeout=120).text == want
    finally:
        gen.close()


def test_weight_kernel_is_validated() -> None:
    with pytest.raises(ConfigError, match="weight_kernel"):
        EngineConfig(weight_kernel="fast")  # type: ignore[arg-type]


def test_a_model_off_the_grid_is_left_as_it_is() -> None:
    model = build_model(seed=6)  # random fp32 weights, as DeepSeek-R1-Distill's are to a grid
    report = use_block_kernels(model)
    assert report.packed == {} and report.dense == 15 and report.packed_bytes == 0
    assert not any(isinstance(m, BlockLinear) for m in model.modules())
    assert StepThreads(model).rows == 0


def test_an_edit_of_the_header_alone_changes_the_build_flags(tmp_path, monkeypatch) -> None:
    """torch's versioner hashes sources and flags only: the header digest is in the flags."""
    import serving.blockquant as bq

    header = tmp_path / "kernels.h"
    header.write_text(bq.HEADERS[0].read_text())
    monkeypatch.setattr(bq, "HEADERS", [header])
    before = bq._headers_flag()
    assert before == bq._headers_flag() and before.startswith("-DRAGTUNE_HEADERS_SHA256=")
    header.write_text(header.read_text() + "\n// an edit\n")
    assert bq._headers_flag() != before
