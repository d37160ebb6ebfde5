"""Continuous batching on tiny models with real threads: rows that join a running batch and
leave it mid-way give what an unbatched greedy `generate` gives (base and adapters, chunked
prefill), one row's cancel/timeout leaves the others intact, shared-prefix cache hits change
nothing, the repetition guard stops a looping model, adapter discovery never blocks, and
cancelled jobs free their queue slot at once."""

from __future__ import annotations

import threading

import pytest

from ragtune.errors import BusyError
from ragtune.types import GenerationRequest
from serving.batching import is_looping
from serving.config import EngineConfig
from serving.engine import TransformersGenerator
from serving.generation import GenerationTimeout
from tests.serving_fixtures import make_adapter, reference_output, settings_for
from tests.tiny_models import CHATML_TEMPLATE

SYSTEM = "You are a helpful assistant. Answer from the context and cite the source [1]."
LONG = "Tell me about the reactor and its safety policy, please. " * 6


def req(prompt: str, model: str = "base", n: int = 6, system: str | None = None,
        **kw) -> GenerationRequest:
    messages = [{"role": "system", "content": system}] if system else []
    return GenerationRequest([*messages, {"role": "user", "content": prompt}], model, n, **kw)


@pytest.fixture(scope="module")
def engine(adapter_workspace, tiny_llama_dir):
    """Small prefill chunks (long prompts are prefilled across several steps) and no loop
    guard, so outputs compare token for token with plain `generate`."""
    settings = settings_for(adapter_workspace, generator=str(tiny_llama_dir))
    gen = TransformersGenerator.from_settings(settings, EngineConfig(
        max_batch_size=8, prefill_chunk_tokens=8, repeat_guard_tokens=0, repeat_ban=False))
    yield gen
    gen.close()


def expected(ws, base_dir, request: GenerationRequest) -> str:
    adapter = None if request.model == "base" else ws / "runs" / request.model / "adapter"
    return reference_output(base_dir, adapter, request.messages, request.max_new_tokens)


def test_rows_join_and_leave_a_running_batch(engine, adapter_workspace, tiny_llama_dir) -> None:
    running = engine.submit(req("hi", "base", n=200), stream=True)
    assert isinstance(running.deltas.get(timeout=60), str)  # it is decoding now
    joiners = [req("What is the capital?", "alpha", n=5), req(LONG, "base", n=7),
               req("hi", "beta", n=9), req(LONG, "alpha", n=4, system=SYSTEM)]
    jobs = [engine.submit(r) for r in joiners]
    results = [job.future.result(timeout=120) for job in jobs]
    assert not running.future.done()  # the joiners left while the first row still ran
    for request, result in zip(joiners, results, strict=True):
        assert result.text == expected(adapter_workspace, tiny_llama_dir, request), request
        assert result.completion_tokens <= request.max_new_tokens
    first = running.future.result(timeout=120)
    assert first.text == expected(adapter_workspace, tiny_llama_dir, req("hi", "base", n=200))


def test_one_rows_cancel_and_timeout_leave_the_others_intact(engine, adapter_workspace,
                                                             tiny_llama_dir) -> None:
    cancel = threading.Event()
    doomed = engine.submit(req("hi", "alpha", n=300), cancel, stream=True)
    assert isinstance(doomed.deltas.get(timeout=60), str)
    others = [req("What is the capital?", "base", n=12), req(LONG, "beta", n=10)]
    jobs = [engine.submit(r) for r in others]
    late = engine.submit(req("hi", "alpha", n=50))
    late.deadline = 0.0  # past its deadline from the start
    cancel.set()
    assert doomed.future.result(timeout=60).finish_reason == "cancelled"
    with pytest.raises(GenerationTimeout):
        late.future.result(timeout=60)
    for request, job in zip(others, jobs, strict=True):
        assert job.future.result(timeout=120).text == \
            expected(adapter_workspace, tiny_llama_dir, request)


def test_shared_prefix_cache_hits_change_nothing(adapter_workspace, tiny_llama_dir) -> None:
    settings = settings_for(adapter_workspace, generator=str(tiny_llama_dir))
    requests = [req(q, m, n=8, system=SYSTEM) for m in ("base", "alpha")
                for q in ("What is the capital?", LONG, "hi")]
    outputs = {}
    for entries in (8, 0):
        gen = TransformersGenerator.from_settings(settings, EngineConfig(
            prefix_cache_entries=entries, prefill_chunk_tokens=16,
            repeat_guard_tokens=0, repeat_ban=False))
        try:
            outputs[entries] = [gen.complete(r).text for r in requests]  # one by one: hits
            outputs[entries, "batched"] = [r.text for r in gen.generate(requests)]
            hits = gen.prefixes.hits
        finally:
            gen.close()
        assert hits >= (len(requests) * 2 - 2 if entries else 0)
    assert outputs[8] == outputs[0] == outputs[8, "batched"] == outputs[0, "batched"]
    assert outputs[8] == [expected(adapter_workspace, tiny_llama_dir, r) for r in requests]


def test_a_burst_of_prompts_is_prefilled_together(adapter_workspace, tiny_llama_dir) -> None:
    """Prompts that arrive together with a cached system prompt are prefilled in one padded
    forward and join a batch that is already decoding: each row still gives what an
    unbatched `generate` gives, and the running row is undisturbed."""
    settings = settings_for(adapter_workspace, generator=str(tiny_llama_dir))
    gen = TransformersGenerator.from_settings(settings, EngineConfig(
        max_batch_size=16, prefill_chunk_tokens=256, repeat_guard_tokens=0, repeat_ban=False))
    try:
        for model in ("base", "alpha"):  # the system prompt's KV cached per model
            gen.complete(req("hi", model, n=2, system=SYSTEM))
        running = gen.submit(req("hi", "base", n=120, system=SYSTEM), stream=True)
        assert isinstance(running.deltas.get(timeout=60), str)
        burst = [req(q, m, n=n, system=SYSTEM) for q, n in (("What is the capital?", 5),
                 (LONG, 9), ("hi", 3), ("Tell me about the reactor.", 7))
                 for m in ("base", "alpha")]
        results = gen.generate(burst)
        together = gen._batcher.together
        first = running.future.result(timeout=120)
    finally:
        gen.close()
    assert together >= 6  # two groups of up to four, one per model
    for request, result in zip(burst, results, strict=True):
        assert result.text == expected(adapter_workspace, tiny_llama_dir, request), request
    assert first.text == expected(adapter_workspace, tiny_llama_dir,
                                  req("hi", "base", n=120, system=SYSTEM))


DEFAULT_SYSTEM_TEMPLATE = (  # SmolLM2/Qwen-style: a system block even when none is given
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    + CHATML_TEMPLATE)


def test_the_templates_own_opening_is_a_shared_prefix_too(adapter_workspace,
                                                          tiny_llama_dir) -> None:
    """User-first conversations share what the template puts before the user's text (here a
    default system block): cached once, with outputs identical to no cache."""
    settings = settings_for(adapter_workspace, generator=str(tiny_llama_dir))
    requests = [req(q, m, n=8) for m in ("base", "alpha") for q in ("What is the capital?", "hi")]
    outputs, hits = {}, {}
    for entries in (8, 0):
        gen = TransformersGenerator.from_settings(settings, EngineConfig(
            prefix_cache_entries=entries, prefill_chunk_tokens=16,
            repeat_guard_tokens=0, repeat_ban=False))
        gen.tokenizer.chat_template = DEFAULT_SYSTEM_TEMPLATE
        try:
            outputs[entries] = [gen.complete(r).text for r in requests]
            hits[entries] = gen.prefixes.hits
            assert gen.render(requests[0]).startswith("<|im_start|>system\nYou are")
        finally:
            gen.close()
    assert hits[8] == len(requests) - 2 and hits[0] == 0  # one miss per model, then hits
    assert outputs[8] == outputs[0]


def test_the_repetition_guard_stops_a_looping_model(tiny_llama_dir, tiny_qwen2_dir) -> None:
    gen = TransformersGenerator.load(str(tiny_llama_dir))  # default guard on
    try:
        looping = gen.complete(req("hi", n=300))  # the untrained tiny model repeats "\n"
    finally:
        gen.close()
    assert looping.finish_reason == "stop" and looping.completion_tokens < 64
    assert gen.finished["repetition"] == 1
    prose = gen.tokenizer("The quick brown fox jumps over the lazy dog. Question: what is "
                          "the capital? Answer: the capital is Lumen City. Aster Labs "
                          "operates the Northwind reactor under safety policy 7 [1].")["input_ids"]
    assert not is_looping(prose, 32)
    assert is_looping(prose + gen.tokenizer(" [4]")["input_ids"] * 12, 32)


def test_adapter_discovery_never_blocks_and_loads_once(tmp_path, tiny_llama_dir) -> None:
    ws = tmp_path / "ws"
    (ws / "runs").mkdir(parents=True)
    gen = TransformersGenerator.from_settings(settings_for(ws, generator=str(tiny_llama_dir)))
    try:
        make_adapter(tiny_llama_dir, ws / "runs" / "late" / "adapter", seed=5)
        gen._last_scan = -1e9  # a rescan is due
        listed: list[list[str]] = []
        with gen._model_lock:  # as if the worker were in the middle of a long step
            lister = threading.Thread(target=lambda: listed.append(gen.models()))
            lister.start()
            lister.join(timeout=30)
            assert not lister.is_alive() and listed == [["base"]]  # answered, not blocked
            callers = [threading.Thread(target=gen.refresh_adapters) for _ in range(4)]
            for caller in callers:
                caller.start()
        for caller in callers:
            caller.join(timeout=60)
        gen.refresh_adapters()
        assert gen.models() == ["base", "late"] and gen.adapter_loads["late"] == 1
        assert gen.complete(req("hi", "late", n=4)).completion_tokens > 0
    finally:
        gen.close()


def test_cancelled_jobs_leave_the_queue_at_once(tiny_llama_dir) -> None:
    gen = TransformersGenerator.load(str(tiny_llama_dir), config=EngineConfig(
        max_batch_size=1, max_queue=2, repeat_guard_tokens=0, repeat_ban=False))
    try:
        busy = gen.submit(req("hi", n=450), stream=True)
        assert isinstance(busy.deltas.get(timeout=60), str)  # the only slot is taken
        cancels = [threading.Event(), threading.Event()]
        waiting = [gen.submit(req("hi", n=5), cancel) for cancel in cancels]
        with pytest.raises(BusyError):
            gen.submit(req("hi", n=5))
        for cancel in cancels:
            cancel.set()  # their clients hung up
        assert gen.queued == 0
        patient = [gen.submit(req("hi", n=5)) for _ in range(2)]  # room again
        assert [job.future.result(timeout=60).finish_reason for job in waiting] == \
            ["cancelled"] * 2
        gen._abandon(busy)
        assert all(job.future.result(timeout=60).completion_tokens == 5 for job in patient)
    finally:
        gen.close()
