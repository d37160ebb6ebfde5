"""Padding-free packed training with transformers' own machinery.

A packed row is a list of whole examples (chosen by `finetune.encode.pack` so that a row holds
about `cutoff_len` tokens). `PackedCollator` flattens every example of a micro-batch into one
sequence with `transformers.DataCollatorWithFlattening`: no padding, position ids restarting at
0 for each example and, for flash-attention, the `cu_seq_lens` of the variable-length kernel.
No attention mask is passed, so transformers' mask builders (sdpa, eager, flex, and the
sliding-window variants) derive the example boundaries from the position ids of that very
batch (`masking_utils.find_packed_sequence_indices`): nothing is cached between batches, and
sliding windows are honoured. On CPU the sdpa implementation gets a block-diagonal causal mask;
on a CUDA GPU with flash-attn installed the varlen kernel skips the masked blocks entirely.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from transformers import DataCollatorWithFlattening

from finetune.encode import IGNORE


def attention_implementation() -> str:
    """flash_attention_2 on a CUDA GPU where flash-attn is installed, else sdpa (both honour
    position-id packing)."""
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


class PackedCollator:
    """Flatten the examples of all packed rows of a micro-batch into one padding-free row."""

    def __init__(self, flash_kwargs: bool | None = None) -> None:
        if flash_kwargs is None:
            flash_kwargs = attention_implementation() == "flash_attention_2"
        self.flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE,
                                                  return_flash_attn_kwargs=flash_kwargs)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        examples = [ex for row in rows for ex in row["examples"]]
        batch = dict(self.flatten(examples))
        batch["n_tokens"] = torch.tensor(sum(len(ex["input_ids"]) for ex in examples))
        return batch
