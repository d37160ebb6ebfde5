"""The sub-batch cache on a tiny Llama from a config: rows that join (shorter or longer than
the running ones, past the initial slot and column capacity) and leave (the last row moving
into a freed slot) get, at every step, the logits each row gets decoded alone with a plain
`DynamicCache` (logits, not only tokens: a tiny random model repeats one token whatever its
context, so equal tokens would prove little)."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from serving.kvcache import BufferCache, SubBatch
from tests.tiny_models import build_model


def prefill(model, ids: list[int]) -> tuple[BufferCache, torch.Tensor]:
    cache = BufferCache()
    out = model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
    return cache, out.logits[0, -1]


def alone(model, ids: list[int], steps: int) -> list[torch.Tensor]:
    """The last-position logits of one row decoded greedily on its own, step by step."""
    cache = DynamicCache()
    out = model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
    logits = [out.logits[0, -1]]
    for _ in range(steps - 1):
        token = int(logits[-1].argmax())
        out = model(input_ids=torch.tensor([[token]]), cache=cache, use_cache=True)
        logits.append(out.logits[0, -1])
    return logits


def step(model, batch: SubBatch, produced: dict[str, list[torch.Tensor]]) -> None:
    out = model(**batch.step_inputs(), use_cache=True)
    for row, logits in zip(batch.rows, out.logits[:, -1], strict=True):
        produced[row].append(logits)
    batch.advance(out.logits[:, -1].argmax(-1).tolist())


def join(model, batch: SubBatch, produced: dict, name: str, ids: list[int]) -> None:
    cache, logits = prefill(model, ids)
    batch.add(name, cache.contents(), len(ids), int(logits.argmax()))
    produced[name] = [logits]


def assert_as_alone(produced: dict, want: dict) -> None:
    for name, logits in produced.items():
        for k, got in enumerate(logits):
            assert torch.allclose(got, want[name][k], atol=1e-4), (name, k)


@torch.inference_mode()
def test_rows_join_and_leave_in_place_and_decode_as_alone() -> None:
    model = build_model("llama").eval()
    gen = torch.Generator().manual_seed(3)
    prompts = {f"r{i}": torch.randint(3, 500, (n,), generator=gen).tolist()
               for i, n in enumerate([9, 4, 30, 6, 12, 3, 50, 7])}  # r2, r6: longer than the rest
    steps = 80  # the 50-token row's end passes the columns it regrew to (50 + 64)
    want = {name: alone(model, ids, steps + 1) for name, ids in prompts.items()}
    batch, produced, joining = SubBatch("base"), {}, iter(prompts.items())
    schedule = {0: 2, 3: 1, 5: 3, 9: 2}  # step -> how many rows join then
    for t in range(steps):
        for _ in range(schedule.get(t, 0)):
            join(model, batch, produced, *next(joining))
        if t in (7, 12):  # rows leave: the last rows move into their slots
            leaving = {batch.rows[0], batch.rows[2]} if t == 7 else {batch.rows[1]}
            batch.keep([i for i, row in enumerate(batch.rows) if row not in leaving])
        step(model, batch, produced)
    assert len(batch.rows) == 5 and batch.cache is not None
    assert batch.cache.layers[0].kbuf.shape[0] == 8  # 8 rows at once regrew 4 slots
    assert sum(len(v) for v in produced.values()) > 8 * 20
    assert_as_alone(produced, want)


@torch.inference_mode()
def test_the_last_row_leaving_empties_the_batch_and_it_starts_again() -> None:
    model = build_model("llama").eval()
    prompts = {"a": [5, 6, 7], "b": [8, 9, 10, 11, 12], "c": [20, 21]}
    want = {name: alone(model, ids, 4) for name, ids in prompts.items()}
    batch, produced = SubBatch("base"), {}
    join(model, batch, produced, "a", prompts["a"])
    join(model, batch, produced, "b", prompts["b"])
    step(model, batch, produced)
    batch.keep([1])
    assert batch.rows == ["b"] and batch.step_inputs()["attention_mask"] is None
    batch.keep([])
    assert batch.rows == [] and batch.cache is None
    join(model, batch, produced, "c", prompts["c"])
    for _ in range(3):
        step(model, batch, produced)
    assert len(produced["c"]) == 4
    assert_as_alone(produced, want)


@torch.inference_mode()
def test_prompts_prefilled_together_with_holes_decode_as_alone() -> None:
    """Rests of different lengths right-aligned over their cached prefixes (padding holes
    between prefix and rest), moved with their masks into a batch already decoding."""
    model = build_model("llama").eval()
    gen = torch.Generator().manual_seed(5)
    prefix = torch.randint(3, 500, (6,), generator=gen).tolist()
    rests = {"x": torch.randint(3, 500, (9,), generator=gen).tolist(),
             "y": torch.randint(3, 500, (2,), generator=gen).tolist()}
    want = {"x": alone(model, prefix + rests["x"], 6), "y": alone(model, prefix + rests["y"], 7),
            "run": alone(model, [7, 8, 9, 10], 10)}
    running, produced = SubBatch("base"), {}
    join(model, running, produced, "run", [7, 8, 9, 10])
    for _ in range(4):
        step(model, running, produced)
    together = SubBatch("base")
    for name in rests:
        cache, _ = prefill(model, prefix)
        together.add(name, cache.contents(), len(prefix), 0)
    ids = torch.zeros((2, 9), dtype=torch.long)
    pos, real = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, rest in enumerate(rests.values()):
        ids[i, 9 - len(rest):] = torch.tensor(rest)
        pos[i, 9 - len(rest):] = torch.arange(6, 6 + len(rest))
        real[i, 9 - len(rest):] = 1
    out = model(**together.chunk_inputs(ids, pos, real), use_cache=True)
    for i, (name, rest) in enumerate(rests.items()):
        layers, mask = together.row_contents(i)
        assert int(mask.sum()) == len(prefix) + len(rest)
        assert bool(mask.all()) == (name == "x")  # "y" has a hole of 7 padding columns
        produced[name] = [out.logits[i, -1]]
        running.add(name, layers, len(prefix) + len(rest), int(out.logits[i, -1].argmax()), mask)
    for _ in range(5):
        step(model, running, produced)
    running.keep([2])  # "y", holes and all, decodes alone: its mask must still apply
    assert not bool(running.mask.all())
    step(model, running, produced)
    assert [len(produced[n]) for n in ("run", "x", "y")] == [10, 6, 7]
    assert_as_alone(produced, want)
