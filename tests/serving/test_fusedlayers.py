"""Fused norms and rotary (serving.fusedlayers, smallops.cpp): the kernels against
transformers' own functions, a switched Llama model against the same model unswitched (logits
of a prefill and of decode steps through the engine's KV buffers, base and LoRA), training
and gradients on transformers' forward, and models that are not plain Llama left alone."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.models.llama import modeling_llama as llama

from serving import fusedlayers
from serving.blockquant import kernel
from serving.kvcache import BufferCache


def test_rms_norm_and_residual_add_match_transformers():
    gen = torch.Generator().manual_seed(0)
    norm = llama.LlamaRMSNorm(576, eps=1e-5)
    norm.weight.data = torch.randn(576, generator=gen)
    x, residual = torch.randn(3, 5, 576, generator=gen), torch.randn(3, 5, 576, generator=gen)
    torch.testing.assert_close(kernel().rms_norm(x, norm.weight, 1e-5), norm(x),
                               rtol=1e-6, atol=1e-5)
    total, normed = kernel().add_rms_norm(x, residual, norm.weight, 1e-5)
    assert torch.equal(total, residual + x)
    torch.testing.assert_close(normed, norm(residual + x), rtol=1e-6, atol=1e-5)
    odd = torch.randn(2, 37, generator=gen)  # a width that is not a multiple of 8
    w = torch.randn(37, generator=gen)
    torch.testing.assert_close(kernel().rms_norm(odd, w, 1e-6),
                               w * (odd * torch.rsqrt(odd.pow(2).mean(-1, keepdim=True) + 1e-6)))


@pytest.mark.parametrize("heads,kv_heads,tokens", [(9, 3, 1), (4, 4, 7)])
def test_rotary_is_bit_identical_on_transposed_views(heads, kv_heads, tokens):
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, tokens, heads, 64, generator=gen).transpose(1, 2)
    k = torch.randn(2, tokens, kv_heads, 64, generator=gen).transpose(1, 2)
    cos, sin = torch.randn(2, tokens, 64, generator=gen), torch.randn(2, tokens, 64, generator=gen)
    want_q, want_k = llama.apply_rotary_pos_emb(q, k, cos, sin)
    got_q, got_k = kernel().rotary(q, k, cos, sin)
    assert torch.equal(got_q, want_q) and torch.equal(got_k, want_k)
    assert got_q.is_contiguous()


def _decode_logits(model, ids: torch.Tensor, steps: int = 4) -> list[torch.Tensor]:
    """Prefill into the engine's buffer cache, then greedy decode steps: every step's logits."""
    out: list[torch.Tensor] = []
    with torch.inference_mode():
        cache = BufferCache()
        logits = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1]
        out.append(logits)
        for step in range(steps):
            nxt = logits.argmax(-1, keepdim=True)
            pos = torch.tensor([[ids.shape[1] + step]])
            logits = model(input_ids=nxt, position_ids=pos, past_key_values=cache,
                           use_cache=True).logits[:, -1]
            out.append(logits)
    return out


def test_a_switched_model_gives_the_same_logits(grid_model):
    from peft import PeftModel

    base, adapter = grid_model
    plain = AutoModelForCausalLM.from_pretrained(base).eval()
    fused = AutoModelForCausalLM.from_pretrained(base).eval()
    assert fusedlayers.use_fused_layers(fused, kernel()) == plain.config.num_hidden_layers
    assert type(fused.model.norm) is fusedlayers.FusedRMSNorm
    ids = torch.tensor([[1, 5, 9, 2, 7, 3, 11, 4]])
    for want, got in zip(_decode_logits(plain, ids), _decode_logits(fused, ids), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    plain_lora = PeftModel.from_pretrained(plain, str(adapter)).eval()
    fused_lora = PeftModel.from_pretrained(fused, str(adapter)).eval()
    for want, got in zip(_decode_logits(plain_lora, ids), _decode_logits(fused_lora, ids),
                         strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_training_runs_on_transformers_forward(grid_model):
    base, _ = grid_model
    plain = AutoModelForCausalLM.from_pretrained(base)
    fused = AutoModelForCausalLM.from_pretrained(base)
    fusedlayers.use_fused_layers(fused, kernel())
    ids = torch.tensor([[1, 5, 9, 2, 7, 3]])
    losses = [m(input_ids=ids, labels=ids).loss for m in (plain, fused)]
    assert torch.equal(losses[0], losses[1])  # with gradients: transformers' own ops, exactly
    losses[1].backward()
    assert fused.model.layers[0].mlp.up_proj.weight.grad is not None


def test_other_models_are_left_alone(tmp_path):
    from tests.tiny_models import save_tiny_model

    model = AutoModelForCausalLM.from_pretrained(save_tiny_model(tmp_path, "qwen2"))
    assert fusedlayers.use_fused_layers(model, kernel()) == 0
    assert all(not isinstance(m, fusedlayers.FusedLlamaLayer) for m in model.modules())
