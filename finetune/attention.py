"""Attention for packed rows: causal SDPA run on each packed example separately.

transformers already keeps packed examples apart when position ids restart (a block-diagonal
mask), but that mask makes SDPA attend over the whole row: cost grows with the square of the
row length, and the masked path is slower than the causal one. Here the row is cut at each
position restart and every piece goes through SDPA with `is_causal=True`, as flash-attention's
variable-length kernels do on GPUs. Registered with transformers' `AttentionInterface` under
`ragtune_packed` (its mask function builds no mask: the boundaries come from position ids).
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "ragtune_packed"
_cache: dict[tuple, list[list[tuple[int, int]]]] = {}


def segments(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) of each run of consecutive positions."""
    key = (position_ids.data_ptr(), tuple(position_ids.shape), position_ids._version)
    if key in _cache:
        return _cache[key]
    rows = []
    for row in position_ids.tolist():
        starts = [0] + [i for i in range(1, len(row)) if row[i] != row[i - 1] + 1]
        rows.append(list(zip(starts, starts[1:] + [len(row)], strict=True)))
    _cache.clear()  # one entry: every layer of one forward asks for the same rows
    _cache[key] = rows
    return rows


def packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: torch.Tensor | None,
                     dropout: float = 0.0, scaling: float | None = None,
                     position_ids: torch.Tensor | None = None, **kwargs: Any
                     ) -> tuple[torch.Tensor, None]:
    """(batch, heads, seq, dim) in; (batch, seq, heads, dim) out, like transformers' SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = (position_ids is None or attention_mask is not None
             or query.shape[2] != key.shape[2] or query.shape[2] == 1)
    if not plain:
        pos = position_ids.expand(query.shape[0], -1) if position_ids.shape[0] == 1 \
            else position_ids
        rows = segments(pos)
        plain = all(len(r) == 1 for r in rows)
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    out_rows = []
    for b, row in enumerate(rows):
        pieces = [sdpa_attention_forward(module, query[b:b + 1, :, s:e], key[b:b + 1, :, s:e],
                                         value[b:b + 1, :, s:e], None, dropout=dropout,
                                         scaling=scaling, is_causal=True)[0]
                  for s, e in row]
        out_rows.append(torch.cat(pieces, dim=1))
    return torch.cat(out_rows, dim=0), None


def packed_mask(*args: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any
                ) -> torch.Tensor | None:
    """No mask for packed rows (their boundaries come from position ids); with a padding mask
    (e.g. batched generation) the usual SDPA mask, and `packed_attention` falls back to SDPA."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register() -> str:
    """Make `attn_implementation="ragtune_packed"` available to from_pretrained; returns it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, packed_attention)
    AttentionMaskInterface.register(NAME, packed_mask)
    return NAME
