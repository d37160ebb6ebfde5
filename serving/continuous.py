"""Iteration-level (continuous) batching: the decode loop of the in-process engine.

Each iteration of `ContinuousBatcher.run` does three things:

1. **admit**: take as many queued jobs as there are free slots (`max_batch_size` rows in all,
   prefilling or decoding); an idle loop blocks for the first job. A request that arrives while
   others decode joins at the next iteration instead of waiting for a whole batch.
2. **prefill**, at most `prefill_chunk_tokens` prompt tokens per iteration, oldest row first,
   each row into its own `BufferCache`: a long RAG prompt is prefilled in chunks between
   decode steps, so it delays the decoding rows by one chunk at a time, never by its whole
   length. A row whose prompt starts with a cached shared prefix (the system prompt, per
   model/adapter, see `PrefixCache`) starts from a copy of that prefix's KV; a miss prefills the
   prefix as a chunk of its own and stores it. The last prompt chunk yields the first token.
3. **decode**: one forward per model/adapter (`SubBatch`: rows of one adapter share one
   left-padded KV cache, so adapters never mix inside a forward), one token per row; each row
   checks its own EOS, stop strings, token limit, repetition guard, cancel flag and deadline
   (the repeat ban, `serving.repeats`, has already refused the token that would loop)
   and leaves the batch as soon as it finishes (its cache rows are dropped at once).

Why not transformers' own `ContinuousBatchingManager` (`generate_batch`, paged attention):
it runs one `GenerationConfig` for every request, has no per-request LoRA adapter (peft's
`set_adapter` is model-wide) nor stop strings, and owns the model from its own thread, so
adapters could not be attached while it runs. The model itself, its attention
implementations (sdpa, flash on CUDA) and the cache interface are transformers'; only the
scheduling and the cache buffers (`serving.kvcache`) are ours. Greedy rows use `argmax` of
the same logits `generate` sees, so a batched row gives what an unbatched `generate` gives
(with the repeat ban as a logits processor when the ban is on: tests/serving/test_repeats.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from serving.batching import Job, JobQueue, Row, Rules
from serving.kvcache import BufferCache, PrefixCache, SubBatch
from serving.repeats import RepeatBan

log = logging.getLogger(__name__)

MAX_UNBANS = 8  # the repeat ban excludes at most this many tokens of one row in one step
GREEDY_BELOW = 1e-5  # temperatures below this are greedy (no inf/nan from dividing by ~0)

Forward = Callable[..., torch.Tensor]  # (model name, **inputs) -> last-position logits [B, V]


@dataclass(eq=False)
class Prefill:
    """A row whose prompt is (partly) not in its cache yet."""

    row: Row
    cache: BufferCache
    done: int  # prompt tokens already in the cache
    store_prefix: bool  # a prefix-cache miss: save the KV once `done` reaches prefix_len


class ContinuousBatcher:
    """The worker's loop: admit, prefill a chunk, decode one token per running row."""

    def __init__(self, queue: JobQueue, forward: Forward, lock: Any, rules: Rules,
                 finish: Callable[[Row], None], max_batch: int, prefill_chunk: int,
                 prefix_cache: PrefixCache) -> None:
        self.queue, self.forward, self.lock, self.rules = queue, forward, lock, rules
        self.finish, self.max_batch, self.prefill_chunk = finish, max_batch, prefill_chunk
        self.prefixes = prefix_cache
        self.prefilling: list[Prefill] = []
        self.batches: dict[str, SubBatch] = {}
        self.device = torch.device("cpu")
        self.together = 0  # rows whose prompts were prefilled in a shared forward (stats)

    def active(self) -> int:
        return len(self.prefilling) + sum(len(b.rows) for b in self.batches.values())

    def run(self, device: torch.device) -> None:
        """Loop until the queue is closed; then end the rows still running."""
        self.device = device
        while True:
            busy = self.active() > 0
            free = self.max_batch - self.active()
            jobs = self.queue.take(free, block=not busy) if free > 0 else []
            if jobs is None:
                break
            with self.lock, torch.inference_mode():
                for job in jobs:
                    self._admit(job)
                self._guarded(self._prefill_some)
                self._guarded(self._decode_all)
        for row in self._all_rows():
            row.finish = "cancelled"
            self.finish(row)
        self.prefilling.clear()
        self.batches.clear()

    def _all_rows(self) -> list[Row]:
        return [p.row for p in self.prefilling] + \
            [row for batch in self.batches.values() for row in batch.rows]

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run a step; a failure fails the rows it touched (all running rows), never the loop."""
        try:
            step()
        except Exception as err:  # noqa: BLE001 - one bad step must not kill the worker
            log.exception("generation step failed")
            for row in self._all_rows():
                row.finish = "error"
                row.error = err
                self.finish(row)
            self.prefilling.clear()
            self.batches.clear()

    # ---------------------------------------------------------------------------- admit
    def _admit(self, job: Job) -> None:
        row = Row(job, self.rules, rng=self._rng(job))
        if not row.check_alive():
            self.finish(row)
            return
        model, ids = job.request.model, job.prompt_ids
        if job.prefix_len:
            cached = self.prefixes.get(model, tuple(ids[: job.prefix_len]))
            if cached is not None:
                self.prefilling.append(Prefill(row, BufferCache.from_layers(cached),
                                               job.prefix_len, False))
                return
        self.prefilling.append(Prefill(row, BufferCache(), 0, bool(job.prefix_len)))

    def _rng(self, job: Job) -> torch.Generator | None:
        req = job.request
        if req.temperature < GREEDY_BELOW:
            return None
        rng = torch.Generator(device=self.device)
        if req.seed is not None:
            rng.manual_seed(req.seed)
        else:
            rng.seed()
        return rng

    # -------------------------------------------------------------------------- prefill
    def _prefill_some(self) -> None:
        budget = self.prefill_chunk - self._prefill_together()
        while budget > 0 and self.prefilling:
            pre = self.prefilling[0]
            if not pre.row.check_alive():
                self.prefilling.pop(0)
                self.finish(pre.row)
                continue
            ids = pre.row.job.prompt_ids
            end = min(len(ids), pre.done + budget)
            if pre.store_prefix and pre.done < pre.row.job.prefix_len:
                end = min(end, pre.row.job.prefix_len)  # the prefix as a chunk of its own
            logits = self._run_chunk(pre, ids[pre.done:end])
            budget -= end - pre.done
            pre.done = end
            if pre.store_prefix and end == pre.row.job.prefix_len:
                self.prefixes.put(pre.row.job.request.model, tuple(ids[:end]),
                                  pre.cache.contents())
                pre.store_prefix = False
            if end == len(ids):
                self.prefilling.pop(0)
                self._start_decoding(pre, self._first_tokens(logits, [pre.row])[0])

    def _prefill_together(self) -> int:
        """Prefill the rest of several prompts in one forward, the prompt tokens it took.

        Rows qualify when their cache already holds a prefix (a prefix-cache hit: so every
        padded query has a real column to attend to), their rest fits the budget, and they
        share the oldest such row's model. A burst of requests (16 clients at once, an eval)
        then costs one dense forward instead of one small forward per prompt (SmolLM2, 16
        prompts of ~18 tokens after the system prompt: ~1.1 s one by one)."""
        ready = [p for p in self.prefilling if p.done > 0 and not p.store_prefix
                 and p.row.check_alive()]
        if len(ready) < 2:
            return 0
        model = ready[0].row.job.request.model
        group: list[Prefill] = []
        taken = 0
        for pre in ready:
            rest = len(pre.row.job.prompt_ids) - pre.done
            if pre.row.job.request.model == model and taken + rest <= self.prefill_chunk:
                group.append(pre)
                taken += rest
        if len(group) < 2:
            return 0
        self.prefilling = [p for p in self.prefilling if p not in group]
        self.together += len(group)
        logits, batch = self._run_together(model, group)
        tokens = self._first_tokens(logits, [pre.row for pre in group])
        for i, (pre, token) in enumerate(zip(group, tokens, strict=True)):
            layers, mask = batch.row_contents(i)
            pre.row.step(token)
            if pre.row.finish is not None:
                self.finish(pre.row)
                continue
            running = self.batches.setdefault(model, SubBatch(model))
            running.add(pre.row, layers, len(pre.row.job.prompt_ids), token, mask)
        return taken

    def _run_together(self, model: str, group: list[Prefill]) -> tuple[torch.Tensor, SubBatch]:
        """One forward of the group's prompt rests, right-aligned over their cached prefixes
        (a throwaway sub-batch); the last position's logits of each row and that batch."""
        batch = SubBatch(model)
        for pre in group:
            batch.add(pre.row, pre.cache.contents(), pre.done, 0)
        rests = [pre.row.job.prompt_ids[pre.done:] for pre in group]
        width = max(len(rest) for rest in rests)
        ids = torch.zeros((len(group), width), dtype=torch.long, device=self.device)
        pos = torch.zeros_like(ids)
        real = torch.zeros_like(ids)
        for i, (pre, rest) in enumerate(zip(group, rests, strict=True)):
            start = width - len(rest)
            ids[i, start:] = torch.tensor(rest, dtype=torch.long)
            pos[i, start:] = torch.arange(pre.done, pre.done + len(rest))
            real[i, start:] = 1
        return self.forward(model, **batch.chunk_inputs(ids, pos, real)), batch

    def _first_tokens(self, logits: torch.Tensor, rows: list[Row]) -> list[int]:
        """Each row's first generated token: its request's banned openings excluded."""
        for i, row in enumerate(rows):
            if row.job.banned_first:
                logits[i, list(row.job.banned_first)] = float("-inf")
        return self._choose(logits, rows)

    def _run_chunk(self, pre: Prefill, chunk: list[int]) -> torch.Tensor:
        ids = torch.tensor([chunk], dtype=torch.long, device=self.device)
        pos = torch.arange(pre.done, pre.done + len(chunk), device=self.device)[None, :]
        return self.forward(pre.row.job.request.model, input_ids=ids, position_ids=pos,
                            attention_mask=None, past_key_values=pre.cache)

    def _start_decoding(self, pre: Prefill, token: int) -> None:
        row = pre.row
        row.step(token)
        if row.finish is not None:
            self.finish(row)
            return
        model = row.job.request.model
        batch = self.batches.setdefault(model, SubBatch(model))
        batch.add(row, pre.cache.contents(), pre.done, token)

    # --------------------------------------------------------------------------- decode
    def _decode_all(self) -> None:
        for model, batch in list(self.batches.items()):
            self._drop_finished(batch, [row.check_alive() for row in batch.rows])
            if not batch.rows:
                del self.batches[model]
                continue
            logits = self.forward(model, **batch.step_inputs())
            tokens = self._choose(logits, batch.rows)
            for row, token in zip(batch.rows, tokens, strict=True):
                row.step(token)
            batch.advance(tokens)
            self._drop_finished(batch, [row.finish is None for row in batch.rows])

    def _drop_finished(self, batch: SubBatch, alive: list[bool]) -> None:
        if all(alive):
            return
        for row, keep in zip(batch.rows, alive, strict=True):
            if not keep:
                self.finish(row)
        batch.keep([i for i, keep in enumerate(alive) if keep])

    def _choose(self, logits: torch.Tensor, rows: list[Row]) -> list[int]:
        """The next token of each row: argmax for greedy rows, else temperature + top-p
        sampling with the row's own (seeded) generator; then the repeat ban, if on."""
        tokens = logits.argmax(dim=-1).tolist()
        ban = self.rules.ban
        for i, row in enumerate(rows):
            if row.rng is not None:
                tokens[i] = self._pick(logits[i], row)
            if ban is not None and ban.bans(row.tokens, tokens[i]):
                tokens[i] = self._unrepeat(ban, logits[i], row, tokens[i])
        return tokens

    def _pick(self, logits: torch.Tensor, row: Row) -> int:
        if row.rng is None:
            return int(logits.argmax())
        return sample(logits, row.job.request.temperature, row.job.request.top_p, row.rng)

    def _unrepeat(self, ban: RepeatBan, logits: torch.Tensor, row: Row, token: int) -> int:
        """The row's best token that the repeat ban allows (`serving.repeats`): banned tokens
        are excluded from this row's logits one by one, at most `MAX_UNBANS` times."""
        for _ in range(MAX_UNBANS):
            logits[token] = float("-inf")
            token = self._pick(logits, row)
            if not ban.bans(row.tokens, token):
                break
        return token


def sample(logits: torch.Tensor, temperature: float, top_p: float,
           rng: torch.Generator) -> int:
    """One token from `softmax(logits / temperature)` restricted to the top-p nucleus."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keeps at least the top one
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=rng))
