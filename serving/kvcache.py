"""KV caches of the continuous-batching engine: a growable buffer cache, the left-padded
sub-batch that rows join and leave, and the shared-prefix (system prompt) cache.

Why not transformers' `DynamicCache` as is: its layers `torch.cat` the whole cache on every
decode step (O(cache length) copied per token, per layer), and it has no way to add a row to
a running batch. `BufferLayer` is a transformers cache layer (so every model's attention uses
it unchanged) that writes new keys/values into a preallocated buffer grown by doubling, and
`SubBatch` rebuilds those buffers only when a row joins (left-padded to the common length,
the padding masked) or leaves (rows dropped, all-padding columns trimmed).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values): [B, H, T, D]


class BufferLayer(DynamicLayer):
    """A cache layer whose keys/values live in a buffer with spare room: a step writes only its
    new tokens (amortised O(new tokens)), and `keys`/`values` are views of the filled part."""

    def __init__(self) -> None:
        super().__init__()
        self.length = 0
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        need = self.length + key_states.shape[-2]
        if self._kbuf is None or need > self._kbuf.shape[-2]:
            self._regrow(need, key_states, value_states)
        assert self._kbuf is not None and self._vbuf is not None
        self._kbuf[..., self.length:need, :] = key_states
        self._vbuf[..., self.length:need, :] = value_states
        self.length = need
        self.keys, self.values = self._kbuf[..., :need, :], self._vbuf[..., :need, :]
        return self.keys, self.values

    def _regrow(self, need: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        old_k, old_v = (self.keys, self.values) if self.length else (None, None)
        capacity = max(need * 2, 64)
        shape_k = (*key_states.shape[:2], capacity, key_states.shape[-1])
        shape_v = (*value_states.shape[:2], capacity, value_states.shape[-1])
        self._kbuf = key_states.new_zeros(shape_k)
        self._vbuf = value_states.new_zeros(shape_v)
        if old_k is not None and old_v is not None:
            self._kbuf[..., : self.length, :] = old_k
            self._vbuf[..., : self.length, :] = old_v

    def load(self, keys: torch.Tensor, values: torch.Tensor, spare: int = 64) -> None:
        """Replace the content with `keys`/`values` (copied into a fresh buffer)."""
        self.length = 0
        self._kbuf = self._vbuf = None
        self.is_initialized = False
        if keys.shape[-2] == 0:
            return
        self.lazy_initialization(keys, values)
        self._regrow(keys.shape[-2] + spare, keys, values)
        self.update(keys, values)

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length:
            self.load(self.keys[indices], self.values[indices])

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0 and self.length:
            self.load(self.keys[..., :tokens_to_remove, :], self.values[..., :tokens_to_remove, :])


class BufferCache(Cache):
    """A transformers `Cache` made of `BufferLayer`s (one per decoder layer, created lazily)."""

    def __init__(self) -> None:
        super().__init__(layer_class_to_replicate=BufferLayer)

    @classmethod
    def from_layers(cls, layers: Layers) -> BufferCache:
        cache = cls()
        for keys, values in layers:
            layer = BufferLayer()
            layer.load(keys, values)
            cache.layers.append(layer)
        return cache

    def contents(self) -> Layers:
        return [(layer.keys, layer.values) for layer in self.layers]  # type: ignore[misc]

    @property
    def length(self) -> int:
        return self.layers[0].get_seq_length() if self.layers else 0


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Pad dim -2 (time) of a [B, H, T, D] tensor on the left with zeros up to `width`."""
    missing = width - tensor.shape[-2]
    if missing <= 0:
        return tensor
    pad = tensor.new_zeros((*tensor.shape[:2], missing, tensor.shape[-1]))
    return torch.cat([pad, tensor], dim=-2)


@dataclass(eq=False)
class SubBatch:
    """Decoding rows of one model/adapter that share one left-padded KV cache.

    `mask[b, t]` is 1 where row b has a real token at cache column t; `positions[b]` is the
    position of row b's next token (its real length), so rotary embeddings stay per row.
    """

    model: str
    rows: list[Any] = field(default_factory=list)
    cache: BufferCache = field(default_factory=BufferCache)
    mask: torch.Tensor | None = None  # [B, T] long
    positions: list[int] = field(default_factory=list)
    next_tokens: list[int] = field(default_factory=list)

    def add(self, row: Any, layers: Layers, length: int, first_token: int) -> None:
        """Join a row whose prompt is prefilled (`layers`, `length` tokens) and whose first
        new token is `first_token` (fed at the next step)."""
        device = layers[0][0].device
        if not self.rows:
            self.cache = BufferCache.from_layers(layers)
            self.mask = torch.ones((1, length), dtype=torch.long, device=device)
        else:
            assert self.mask is not None
            width = max(self.cache.length, length)
            merged = [(torch.cat([_left_pad(k0, width), _left_pad(k1, width)]),
                       torch.cat([_left_pad(v0, width), _left_pad(v1, width)]))
                      for (k0, v0), (k1, v1) in zip(self.cache.contents(), layers, strict=True)]
            old = torch.nn.functional.pad(self.mask, (width - self.mask.shape[1], 0))
            new = torch.zeros((1, width), dtype=torch.long, device=device)
            new[:, width - length:] = 1
            self.cache = BufferCache.from_layers(merged)
            self.mask = torch.cat([old, new])
        self.rows.append(row)
        self.positions.append(length)
        self.next_tokens.append(first_token)

    def keep(self, keep: list[int]) -> None:
        """Keep only the rows at indices `keep` and trim columns that became all padding."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        self.positions = [self.positions[i] for i in keep]
        self.next_tokens = [self.next_tokens[i] for i in keep]
        if not keep:
            self.cache, self.mask = BufferCache(), None
            return
        assert self.mask is not None
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask[index]
        start = int(mask.any(dim=0).nonzero()[0])
        self.mask = mask[:, start:]
        self.cache = BufferCache.from_layers(
            [(k[index, :, start:], v[index, :, start:]) for k, v in self.cache.contents()])

    def step_inputs(self) -> dict[str, torch.Tensor | BufferCache]:
        """Model inputs of one decode step: each row's next token at its own position."""
        assert self.mask is not None
        device = self.mask.device
        ones = torch.ones((len(self.rows), 1), dtype=torch.long, device=device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        ids = torch.tensor(self.next_tokens, dtype=torch.long, device=device)[:, None]
        pos = torch.tensor(self.positions, dtype=torch.long, device=device)[:, None]
        mask = None if len(self.rows) == 1 else self.mask  # one row: never padded
        return {"input_ids": ids, "position_ids": pos, "attention_mask": mask,
                "past_key_values": self.cache}

    def advance(self, tokens: list[int]) -> None:
        self.next_tokens = tokens
        self.positions = [p + 1 for p in self.positions]


class PrefixCache:
    """KV of shared prompt prefixes (the system prompt of every RAG prompt), per model/adapter,
    least recently used first out. Entries are never written to: a row copies them into its
    own buffer, so sharing one entry across rows and steps is safe."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], Layers] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, model: str, prefix: tuple[int, ...]) -> Layers | None:
        layers = self._entries.get((model, prefix))
        if layers is None:
            self.misses += 1
            return None
        self._entries.move_to_end((model, prefix))
        self.hits += 1
        return layers

    def put(self, model: str, prefix: tuple[int, ...], layers: Layers) -> None:
        if self.max_entries <= 0:
            return
        self._entries[(model, prefix)] = [(k.clone(), v.clone()) for k, v in layers]
        self._entries.move_to_end((model, prefix))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, model: str) -> None:
        """Forget a model's prefixes (its adapter weights changed)."""
        for key in [key for key in self._entries if key[0] == model]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
