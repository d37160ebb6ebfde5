"""Decode-step attention on the CPU kernel (serving.attention): one query per row matches
transformers' SDPA function on strided cache views with padding masks, grouped-query or not,
head sizes that are not a multiple of 64; everything else goes to SDPA itself; the engine with
block kernels switches a model to it and still answers what plain transformers generates."""

from __future__ import annotations

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from ragtune.types import GenerationRequest
from serving import attention
from serving.blockquant import kernel
from serving.config import EngineConfig
from serving.engine import TransformersGenerator
from tests.serving_fixtures import reference_output


class Layer(torch.nn.Module):
    """What the attention functions read from the calling module."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups, self.is_causal = groups, True


@pytest.fixture(autouse=True)
def loaded_kernel(monkeypatch):
    monkeypatch.setattr(attention, "_kernel", kernel())


def case(rows: int, heads: int, kv_heads: int, dim: int, columns: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(rows, heads, 1, dim, generator=gen)
    # the sub-batch's layout: views of larger buffers, a few slots and columns spare
    kbuf, vbuf = (torch.randn(rows + 3, kv_heads, columns + 20, dim, generator=gen)
                  for _ in range(2))
    key, value = kbuf[:rows, :, 7:7 + columns], vbuf[:rows, :, 7:7 + columns]
    mask = torch.ones(rows, 1, 1, columns, dtype=torch.bool)
    for r in range(rows):  # left padding of different widths, as rows that joined later
        mask[r, ..., : (r * 5) % columns] = False
    return query, key, value, mask


@pytest.mark.parametrize(("rows", "heads", "kv_heads", "dim", "columns"), [
    (16, 9, 3, 64, 98), (1, 4, 4, 64, 1), (3, 8, 2, 128, 37), (5, 6, 3, 96, 200),
    (2, 4, 1, 8, 9)])
@torch.inference_mode()
def test_one_query_per_row_matches_sdpa(rows, heads, kv_heads, dim, columns) -> None:
    query, key, value, mask = case(rows, heads, kv_heads, dim, columns)
    layer = Layer(heads // kv_heads)
    for m in (mask, None):
        want, _ = sdpa_attention_forward(layer, query, key, value, m, scaling=0.1)
        got, _ = attention.decode_attention(layer, query, key, value, m, scaling=0.1)
        assert got.shape == want.shape == (rows, 1, heads, dim)
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


@torch.inference_mode()
def test_a_row_with_no_column_gets_zeros_not_nan() -> None:
    query, key, value, mask = case(2, 4, 2, 64, 10)
    mask[1] = False
    got, _ = attention.decode_attention(Layer(2), query, key, value, mask, scaling=0.1)
    assert torch.isfinite(got).all() and torch.equal(got[1], torch.zeros_like(got[1]))


def test_prefill_gradients_and_float_masks_go_to_sdpa(monkeypatch) -> None:
    calls = []
    real = attention._kernel

    class Spy:
        def decode_attention(self, *args):
            calls.append(args)
            return real.decode_attention(*args)

    monkeypatch.setattr(attention, "_kernel", Spy())
    layer = Layer(2)
    query, key, value, mask = case(3, 4, 2, 64, 12)
    with torch.inference_mode():
        prefill = torch.randn(3, 4, 5, 64)  # five queries per row: SDPA
        attention.decode_attention(layer, prefill, key, value, None, scaling=0.1)
        additive = torch.zeros(3, 1, 1, 12)  # a float mask: SDPA
        attention.decode_attention(layer, query, key, value, additive, scaling=0.1)
    assert not calls
    trained = query.clone().requires_grad_()
    out, _ = attention.decode_attention(layer, trained, key, value, mask, scaling=0.1)
    out.sum().backward()  # SDPA, so gradients flow
    assert trained.grad is not None and not calls
    with torch.inference_mode():
        attention.decode_attention(layer, query, key, value, mask, scaling=0.1)
    assert len(calls) == 1


def test_the_engine_with_block_kernels_decodes_on_it(grid_model) -> None:
    base, adapter = grid_model
    gen = TransformersGenerator.load(str(base), {"tuned": adapter}, EngineConfig(
        max_batch_size=4, repeat_guard_tokens=0, repeat_ban=False, weight_kernel="block"))
    try:
        assert gen.model.config._attn_implementation == attention.IMPLEMENTATION
        requests = [GenerationRequest([{"role": "user", "content": p}], model, 12)
                    for p, model in (("hi", "base"), ("What is the capital?", "tuned"),
                                     ("Tell me about the reactor.", "base"))]
        jobs = [gen.submit(r) for r in requests]
        for request, job in zip(requests, jobs, strict=True):
            want = reference_output(base, adapter if request.model == "tuned" else None,
                                    request.messages, request.max_new_tokens)
            assert job.future.result(timeout=120).text == want
    finally:
        gen.close()
