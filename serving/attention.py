"""Attention of decode steps on the CPU kernel: a transformers attention implementation
(`AttentionInterface`) that sends one-query-per-row steps to `decode_attention` of the block
kernel's extension and everything else (prefill chunks, accelerators, gradients, soft-capped
or sink attention) to transformers' own SDPA function, with SDPA's masks.

Why: at 16 decoding rows of SmolLM2-135M, torch's CPU flash-attention kernel (built for blocks
of queries) took ~18 ms of a ~100 ms step (0.64 ms per layer for 16 rows x 9 heads x ~100
columns), a batched matmul formulation ~8.5 ms (MKL's per-matrix overhead on 48 3x64 matrices);
the kernel reads each key and value once per group of query heads and splits the rows over the
block kernel's helper threads.
"""

from __future__ import annotations

from typing import Any

import torch

IMPLEMENTATION = "ragtune_cpu_decode"
_kernel: Any = None  # the loaded extension, set by use_decode_attention


def use_decode_attention(model: Any, kernel: Any) -> bool:
    """Switch a model that uses SDPA to the decode-step kernel (in place; before adapters are
    attached). False, and nothing changed, when the model uses another implementation."""
    global _kernel
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    _kernel = kernel
    AttentionInterface.register(IMPLEMENTATION, decode_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)
    model.set_attn_implementation(IMPLEMENTATION)
    return True


def decode_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: torch.Tensor | None,
                     dropout: float = 0.0, scaling: float | None = None,
                     is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: query [B, H, Q, D], key/value [B, Hk, T, D]; returns
    [B, Q, H, D]. One query per row on the kernel, anything else through SDPA."""
    mask = _kernel_mask(query, key, attention_mask)
    if _kernel is None or mask is None or not _fits(query, key, value, kwargs):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, is_causal=is_causal,
                                      **kwargs)
    b, h, _, d = query.shape
    scale = scaling if scaling is not None else d ** -0.5
    out = _kernel.decode_attention(query.reshape(b, h, d).contiguous(), key, value, mask,
                                   float(scale))
    return out.view(b, 1, h, d), None


def _fits(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
          kwargs: dict[str, Any]) -> bool:
    if query.shape[2] != 1 or query.device.type != "cpu" or query.dtype != torch.float32:
        return False
    if key.dtype != torch.float32 or value.shape != key.shape or key.stride() != value.stride():
        return False
    if key.stride(-1) != 1 or query.shape[-1] % 8 or query.shape[1] % key.shape[1]:
        return False
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad):
        return False
    return not any(kwargs.get(name) is not None for name in ("softcap", "s_aux", "position_bias"))


def _kernel_mask(query: torch.Tensor, key: torch.Tensor,
                 attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """SDPA's boolean mask of the one query row as contiguous [B, T] (empty: every column);
    None when the mask is of another kind (an additive float mask goes to SDPA)."""
    if attention_mask is None:
        return torch.empty(0, dtype=torch.bool)
    if attention_mask.dtype != torch.bool or attention_mask.dim() != 4:
        return None
    rows = attention_mask[:, 0, -1, : key.shape[2]]
    if rows.shape[-1] != key.shape[2]:
        return None
    return rows.expand(query.shape[0], key.shape[2]).contiguous()
