"""KV caches of the continuous-batching engine: a growable buffer cache, the left-padded
sub-batch that rows join and leave, and the shared-prefix (system prompt) cache.

Why not transformers' `DynamicCache` as is: its layers `torch.cat` the whole cache on every
decode step (O(cache length) copied per token, per layer), and it has no way to add a row to
a running batch. `BufferLayer` (a prefilling row's cache) and `BatchLayer` (a sub-batch's) are
transformers cache layers, so every model's attention uses them unchanged; both write new
keys/values into preallocated buffers grown by doubling. A `SubBatch` keeps its rows in slots
of one buffer: a row joins by one copy into a free slot, left-padded (masked) to the common
length, and leaves by moving the last row into its slot; columns that became all padding are
trimmed by moving a view, not by copying.
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


class BatchLayer(DynamicLayer):
    """One decoder layer's keys/values of a running sub-batch, in place: buffers
    [row slots, heads, columns, dim] with spare slots and columns; the live part is rows
    `[:rows]`, columns `[start:end]`, and a step writes every row's new token at column `end`.
    A row joins by a copy into a free slot (left-padded up to `end`) and leaves by moving the
    last row into its slot, so neither touches the other rows' keys and values."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, slots: int,
                 columns: int) -> None:
        super().__init__()
        self.lazy_initialization(keys, values)
        self.is_initialized = True
        self.kbuf = keys.new_zeros((slots, keys.shape[1], columns, keys.shape[-1]))
        self.vbuf = values.new_zeros((slots, values.shape[1], columns, values.shape[-1]))
        self.rows = self.start = self.end = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device

    def _views(self) -> None:
        self.keys = self.kbuf[: self.rows, :, self.start:self.end]
        self.values = self.vbuf[: self.rows, :, self.start:self.end]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[-2]
        if self.end + new > self.kbuf.shape[-2]:
            self.resize(self.kbuf.shape[0], 2 * (self.end - self.start + new) + 64)
        self.kbuf[: self.rows, :, self.end:self.end + new] = key_states
        self.vbuf[: self.rows, :, self.end:self.end + new] = value_states
        self.end += new
        self._views()
        return self.keys, self.values

    def resize(self, slots: int, columns: int, end: int | None = None) -> None:
        """New buffers of `slots` x `columns`; the live part lands right-aligned at `end`
        (default: its width, so the spare columns are all on the right)."""
        width = self.end - self.start
        end = width if end is None else end
        kbuf, vbuf = self.kbuf, self.vbuf
        self.kbuf = kbuf.new_zeros((slots, kbuf.shape[1], columns, kbuf.shape[-1]))
        self.vbuf = vbuf.new_zeros((slots, vbuf.shape[1], columns, vbuf.shape[-1]))
        self.kbuf[: self.rows, :, end - width:end] = kbuf[: self.rows, :, self.start:self.end]
        self.vbuf[: self.rows, :, end - width:end] = vbuf[: self.rows, :, self.start:self.end]
        self.start, self.end = end - width, end
        self._views()

    def put(self, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write one row's keys/values [1, H, n, D] right-aligned at `end` into `slot`."""
        n = keys.shape[-2]
        self.kbuf[slot, :, self.end - n:self.end] = keys[0]
        self.vbuf[slot, :, self.end - n:self.end] = values[0]

    def move(self, source: int, target: int) -> None:
        self.kbuf[target, :, self.start:self.end] = self.kbuf[source, :, self.start:self.end]
        self.vbuf[target, :, self.start:self.end] = self.vbuf[source, :, self.start:self.end]

    def get_seq_length(self) -> int:
        return self.end - self.start

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("a sub-batch selects rows through SubBatch.keep")

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a sub-batch never crops")


class BatchCache(Cache):
    """The `Cache` of a running sub-batch: one `BatchLayer` per decoder layer."""

    def __init__(self, layers: list[BatchLayer]) -> None:
        super().__init__(layers=layers)


@dataclass(eq=False)
class SubBatch:
    """Decoding rows of one model/adapter that share one left-padded KV cache, updated in
    place (`BatchLayer`): a join copies one row in, a leave moves one row, so a step's cost
    no longer includes rebuilding every row's cache whenever the batch changes (a join used
    to copy all rows' keys/values twice: ~20 ms at 16 rows on SmolLM2-135M).

    `mask[b, t]` is 1 where row b has a real token at live cache column t; `positions[b]` is
    the position of row b's next token (its real length), so rotary embeddings stay per row.
    """

    model: str
    rows: list[Any] = field(default_factory=list)
    cache: BatchCache | None = None
    mask: torch.Tensor | None = None  # [B, live columns] long
    positions: list[int] = field(default_factory=list)
    next_tokens: list[int] = field(default_factory=list)

    def add(self, row: Any, layers: Layers, length: int, first_token: int,
            mask: torch.Tensor | None = None) -> None:
        """Join a row whose prompt is prefilled (`layers`; its next position is `length`) and
        whose first new token is `first_token` (fed at the next step). `mask` marks the real
        columns of `layers` (a row prefilled in a padded batch has holes); default: all."""
        columns = layers[0][0].shape[-2]
        slot = len(self.rows)
        if self.cache is None:
            self.cache = BatchCache([BatchLayer(k, v, 4, 2 * columns + 64) for k, v in layers])
            for layer in self.cache.layers:
                layer.start = layer.end = columns  # empty, right-aligned: no regrow below
            self.mask = torch.zeros((0, 0), dtype=torch.long, device=layers[0][0].device)
        assert self.mask is not None
        first = self.cache.layers[0]
        width = first.end - first.start
        if slot == first.kbuf.shape[0] or columns > first.end:  # no free slot or room: regrow
            end = max(columns, width)
            size = max(first.kbuf.shape[-2], end + 64)
            slots = first.kbuf.shape[0] * (2 if slot == first.kbuf.shape[0] else 1)
            for layer in self.cache.layers:
                layer.resize(slots, size, end)
        pad = max(columns - width, 0)  # the new row reaches left of the live part
        for layer, (keys, values) in zip(self.cache.layers, layers, strict=True):
            layer.rows = slot + 1
            layer.start = min(layer.start, layer.end - columns)
            layer.put(slot, keys, values)
            layer._views()
        new = torch.zeros((1, width + pad), dtype=torch.long, device=self.mask.device)
        new[:, width + pad - columns:] = 1 if mask is None else mask
        self.mask = torch.cat([torch.nn.functional.pad(self.mask, (pad, 0)), new])
        self.rows.append(row)
        self.positions.append(length)
        self.next_tokens.append(first_token)

    def row_contents(self, index: int) -> tuple[Layers, torch.Tensor]:
        """Row `index`'s keys/values from its first real column on, and its mask there."""
        assert self.cache is not None and self.mask is not None
        first = int(self.mask[index].nonzero()[0])
        layers = [(layer.keys[index:index + 1, :, first:], layer.values[index:index + 1, :, first:])
                  for layer in self.cache.layers]
        return layers, self.mask[index, first:]

    def chunk_inputs(self, ids: torch.Tensor, positions: torch.Tensor,
                     real: torch.Tensor) -> dict[str, torch.Tensor | BatchCache | None]:
        """Model inputs of a prefill chunk for every row at once: `ids`, `positions`, `real`
        [B, L], each row's tokens right-aligned, `real` 0 on the padding before them."""
        assert self.mask is not None
        self.mask = torch.cat([self.mask, real.to(self.mask)], dim=1)
        return {"input_ids": ids, "position_ids": positions, "attention_mask": self.mask,
                "past_key_values": self.cache}

    def keep(self, keep: list[int]) -> None:
        """Keep only the rows at indices `keep` (the last rows fill the slots of those that
        left, so row order may change) and trim live columns that became all padding."""
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.positions, self.next_tokens = [], [], []
            self.cache, self.mask = None, None
            return
        assert self.cache is not None and self.mask is not None
        kept = set(keep)
        holes = [i for i in range(len(keep)) if i not in kept]
        movers = [i for i in keep if i >= len(keep)]
        order = list(range(len(keep)))
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
            for layer in self.cache.layers:
                layer.move(mover, hole)
        self.rows = [self.rows[i] for i in order]
        self.positions = [self.positions[i] for i in order]
        self.next_tokens = [self.next_tokens[i] for i in order]
        mask = self.mask[torch.tensor(order, device=self.mask.device)]
        trim = int(mask.any(dim=0).nonzero()[0])
        self.mask = mask[:, trim:]
        for layer in self.cache.layers:
            layer.rows = len(keep)
            layer.start += trim
            layer._views()

    def step_inputs(self) -> dict[str, torch.Tensor | BatchCache | None]:
        """Model inputs of one decode step: each row's next token at its own position."""
        assert self.mask is not None
        device = self.mask.device
        ones = torch.ones((len(self.rows), 1), dtype=torch.long, device=device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        ids = torch.tensor(self.next_tokens, dtype=torch.long, device=device)[:, None]
        pos = torch.tensor(self.positions, dtype=torch.long, device=device)[:, None]
        alone = len(self.rows) == 1 and bool(self.mask.all())
        mask = None if alone else self.mask  # one row without holes: nothing to mask
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
