"""Llama decoder layers with their small ops fused, for inference on CPU with the block kernels.

A one-row decode step of SmolLM2-135M on the block kernels spent about as long in
transformers' small ops as in its 211 matrix products: per layer two RMSNorms (pow, mean,
add, rsqrt, two mul, to: ~9 ATen calls each), rotary embeddings (4 slices, 2 neg, 2 cat, 4 mul,
2 add) and two residual adds, ~750 calls of a few microseconds each per step. `FusedLlamaLayer`
runs the same layer with three calls of the extension in their place (`rms_norm`, `rotary`,
`add_rms_norm` in `smallops.cpp`) and calls the layer's own projections, attention function
and cache, so peft's LoRA wrappers, the block products, the decode-attention kernel and the
engine's KV buffers all stay in the path. Rotary is bit-identical to transformers; RMSNorm
differs only in the order of its sum of squares (~1 ulp).

Only exact Llama layers are switched (`LlamaDecoderLayer` with `LlamaAttention`, `LlamaMLP`
and `LlamaRMSNorm`: the embedded SmolLM2), in place, and a switched layer runs transformers'
own forward for anything but float32 CPU inference (training, gradients, accelerators).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.models.llama import modeling_llama as llama

_kernel: Any = None  # the loaded extension, set by use_fused_layers


def _fits(hidden: torch.Tensor) -> bool:
    return (_kernel is not None and hidden.dtype is torch.float32
            and hidden.device.type == "cpu" and not torch.is_grad_enabled())


class FusedRMSNorm(llama.LlamaRMSNorm):
    """LlamaRMSNorm in one kernel call (inference on float32 CPU tensors)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not _fits(hidden_states) or self.weight.dtype is not torch.float32:
            return super().forward(hidden_states)
        return _kernel.rms_norm(hidden_states, self.weight, self.variance_epsilon)


class FusedLlamaLayer(llama.LlamaDecoderLayer):
    """LlamaDecoderLayer whose norms, residual adds and rotary run fused (see the module)."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: Any = None,
                use_cache: bool | None = False,
                position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                **kwargs: Any) -> torch.Tensor:
        if not _fits(hidden_states) or position_embeddings is None or self.training:
            return super().forward(hidden_states, attention_mask=attention_mask,
                                   position_ids=position_ids, cache=cache, use_cache=use_cache,
                                   position_embeddings=position_embeddings, **kwargs)
        norm = self.input_layernorm
        x = _kernel.rms_norm(hidden_states, norm.weight, norm.variance_epsilon)
        attended = self._attend(x, attention_mask, cache, position_embeddings, kwargs)
        norm = self.post_attention_layernorm
        hidden, x = _kernel.add_rms_norm(attended, hidden_states, norm.weight,
                                         norm.variance_epsilon)
        mlp = self.mlp
        return hidden + mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))

    def _attend(self, x: torch.Tensor, attention_mask: torch.Tensor | None, cache: Any,
                position_embeddings: tuple[torch.Tensor, torch.Tensor],
                kwargs: dict[str, Any]) -> torch.Tensor:
        """LlamaAttention.forward with the rotary embedding in one call."""
        attn = self.self_attn
        input_shape = x.shape[:-1]
        shape = (*input_shape, -1, attn.head_dim)
        query = attn.q_proj(x).view(shape).transpose(1, 2)
        key = attn.k_proj(x).view(shape).transpose(1, 2)
        value = attn.v_proj(x).view(shape).transpose(1, 2)
        query, key = _kernel.rotary(query, key, *position_embeddings)
        if cache is not None:
            key, value = cache.update(key, value, attn.layer_idx, kwargs=kwargs)
        interface = llama.ALL_ATTENTION_FUNCTIONS.get_interface(
            attn.config._attn_implementation, llama.eager_attention_forward)
        out, _ = interface(attn, query, key, value, attention_mask, dropout=0.0,
                           scaling=attn.scaling, **kwargs)
        return attn.o_proj(out.reshape(*input_shape, -1).contiguous())


def _is_plain_llama(layer: Any) -> bool:
    return (type(layer) is llama.LlamaDecoderLayer
            and type(layer.self_attn) is llama.LlamaAttention
            and type(layer.mlp) is llama.LlamaMLP
            and type(layer.input_layernorm) is llama.LlamaRMSNorm
            and type(layer.post_attention_layernorm) is llama.LlamaRMSNorm)


def use_fused_layers(model: torch.nn.Module, kernel: Any) -> int:
    """Switch every plain Llama decoder layer of `model` (and Llama RMSNorms outside them, the
    final norm) to the fused forward, in place, before adapters are attached; the number of
    decoder layers switched (0: not a Llama model, nothing changed)."""
    global _kernel
    layers = [m for m in model.modules() if _is_plain_llama(m)]
    if not layers:
        return 0
    _kernel = kernel
    for layer in layers:
        layer.__class__ = FusedLlamaLayer
    for module in model.modules():
        if type(module) is llama.LlamaRMSNorm:
            module.__class__ = FusedRMSNorm
    return len(layers)
