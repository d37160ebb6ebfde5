"""The transformers engine on tiny models: adapters from the workspace, batching that matches
single runs, per-row limits, streaming, stop strings, cancel, timeout, a full queue, and the
R1-style `<think>` generation prompt."""

from __future__ import annotations

import threading
import time

import pytest

from serving.config import EngineConfig
from serving.engine import PromptTooLong, TransformersGenerator
from serving.generation import GenerationTimeout
from ragtune.errors import BusyError, ModelNotFoundError
from ragtune.types import GenerationRequest
from tests.serving_fixtures import reference_output, settings_for

PROMPTS = ["What is the capital?", "Tell me about the reactor and its safety policy, please.",
           "hi"]


def req(prompt: str, model: str = "base", n: int = 6, **kw) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": prompt}], model, n, **kw)


@pytest.fixture(scope="module")
def engine(adapter_workspace, tiny_llama_dir):
    settings = settings_for(adapter_workspace, generator=str(tiny_llama_dir))
    gen = TransformersGenerator.from_settings(settings, EngineConfig(max_batch_size=8))
    yield gen
    gen.close()


def test_adapters_come_from_the_workspace_runs(engine) -> None:
    assert engine.models() == ["base", "alpha", "beta"]  # gamma has no weights: skipped
    with pytest.raises(ModelNotFoundError, match="available: base, alpha, beta"):
        engine.complete(req("hi", model="gamma"))


def test_each_model_matches_plain_transformers_and_peft(engine, adapter_workspace,
                                                         tiny_llama_dir) -> None:
    outputs = {}
    for model in engine.models():
        adapter = None if model == "base" else adapter_workspace / "runs" / model / "adapter"
        expected = reference_output(tiny_llama_dir, adapter, req(PROMPTS[0]).messages, 6)
        outputs[model] = engine.complete(req(PROMPTS[0], model)).text
        assert outputs[model] == expected, model
    assert len(set(outputs.values())) == 3  # the adapters really change the output


def test_adapters_are_switched_per_change_not_per_step(engine, monkeypatch) -> None:
    # peft's disable_adapter() context recomputes the model status on every entry (slower
    # than a decode step on the embedded model); the engine must not enter it per step.
    from peft import PeftModel

    calls = []
    real = PeftModel.get_model_status
    monkeypatch.setattr(PeftModel, "get_model_status",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    outputs = [engine.complete(req(PROMPTS[0], model, n=6)).text
               for model in ("base", "alpha", "base", "beta", "base")]
    assert not calls
    assert outputs[0] == outputs[2] == outputs[4]
    assert len(set(outputs)) == 3


def test_a_batch_gives_what_single_runs_give(engine) -> None:
    requests = [req(p, m, n=3 + i) for i, (p, m) in enumerate(
        (p, m) for m in engine.models() for p in PROMPTS)]
    alone = [engine.complete(r) for r in requests]
    batched = engine.generate(requests)  # queued together: batched per adapter, left-padded
    assert [b.text for b in batched] == [a.text for a in alone]
    for r, b in zip(requests, batched, strict=True):
        assert b.completion_tokens <= r.max_new_tokens
        assert b.prompt_tokens == alone[0].prompt_tokens or b.prompt_tokens > 0


def test_stream_deltas_add_up_to_the_result(engine) -> None:
    items = list(engine.stream_events(req(PROMPTS[1], "alpha", n=8)))
    *deltas, result = items
    assert all(isinstance(d, str) for d in deltas) and deltas
    assert "".join(deltas) == result.text == engine.complete(req(PROMPTS[1], "alpha", n=8)).text
    assert list(engine.stream(req(PROMPTS[1], "alpha", n=8))) == deltas


def test_stop_strings_cut_the_text(engine) -> None:
    full = engine.complete(req(PROMPTS[0], "alpha", n=8)).text
    stop = next(full[i:i + 2] for i in range(2, len(full) - 1)
                if "\ufffd" not in full[i:i + 2] and full.index(full[i:i + 2]) >= 2)
    cut = full[: full.index(stop)]
    result = engine.complete(req(PROMPTS[0], "alpha", n=8, stop=[stop]))
    assert result.text == cut and cut and result.finish_reason == "stop"
    streamed = list(engine.stream_events(req(PROMPTS[0], "alpha", n=8, stop=[stop])))
    assert "".join(streamed[:-1]) == cut


def test_banned_openings_change_only_the_first_token(engine, adapter_workspace,
                                                     tiny_llama_dir) -> None:
    prompt, model = PROMPTS[1], "alpha"  # the tiny adapter opens it with " helpful"
    free = engine.complete(req(prompt, model, n=6)).text
    opening = free.lstrip()[:1]
    assert opening.isalpha()
    banned = engine.opening_ids((opening,))
    assert banned and all(engine.tokenizer.decode([i]).lstrip().startswith(opening)
                          for i in banned)
    guarded = engine.complete(req(prompt, model, n=6, banned_openings=(opening,))).text
    assert not guarded.lstrip().startswith(opening) and guarded != free
    adapter = adapter_workspace / "runs" / model / "adapter"
    assert guarded == reference_output(tiny_llama_dir, adapter, req(prompt).messages, 6,
                                       banned_first=banned)
    together = engine.generate([req(prompt, model, n=6),
                                req(prompt, model, n=6, banned_openings=(opening,))])
    assert [r.text for r in together] == [free, guarded]  # the ban is the row's own


def test_cancel_stops_a_generation(engine) -> None:
    cancel = threading.Event()
    events = engine.stream_events(req(PROMPTS[0], "alpha", n=400), cancel)
    first = next(events)
    assert isinstance(first, str)
    cancel.set()
    result = list(events)[-1]
    assert result.finish_reason == "cancelled" and result.completion_tokens < 400
    cancel_before = threading.Event()
    cancel_before.set()
    assert engine.complete(req("hi", n=5), cancel_before).finish_reason == "cancelled"


def test_full_queue_is_busy_and_timeouts_raise(tiny_llama_dir) -> None:
    gen = TransformersGenerator.load(str(tiny_llama_dir), config=EngineConfig(  # no loop guard:
        max_batch_size=1, max_queue=2, request_timeout_s=0.2,
        repeat_guard_tokens=0, repeat_ban=False))  # it loops
    try:
        with pytest.raises(BusyError) as busy:
            gen.generate([req(p, n=200) for p in PROMPTS * 3])
        assert busy.value.retry_after >= 1 and "queue is full" in str(busy.value)
        time.sleep(0.3)
        with pytest.raises(GenerationTimeout, match="request_timeout_s"):
            gen.complete(req("hi", n=450))
        with pytest.raises(PromptTooLong, match="context of 512 tokens"):
            gen.complete(req("hi " * 400, n=200))
    finally:
        gen.close()


def test_r1_generation_prompt_is_part_of_the_output(tiny_qwen2_dir) -> None:
    gen = TransformersGenerator.load(str(tiny_qwen2_dir))
    try:
        result = gen.complete(req("hi", n=4))
        streamed = list(gen.stream_events(req("hi", n=4)))
    finally:
        gen.close()
    assert result.text.startswith("<think>\n")
    assert "".join(streamed[:-1]) == result.text == streamed[-1].text


def test_a_run_that_finishes_after_start_up_becomes_a_model(tmp_path, tiny_llama_dir) -> None:
    import json

    from tests.serving_fixtures import make_adapter

    ws = tmp_path / "ws"
    make_adapter(tiny_llama_dir, ws / "runs" / "early" / "adapter", seed=3)
    settings = settings_for(ws, generator=str(tiny_llama_dir))
    gen = TransformersGenerator.from_settings(settings, EngineConfig(max_batch_size=4))
    try:
        assert gen.models() == ["base", "early"]
        late = ws / "runs" / "late"
        make_adapter(tiny_llama_dir, late / "adapter", seed=4)
        (late / "status.json").write_text(json.dumps({"status": "running"}))
        assert gen.refresh_adapters() == []  # still training: not served yet
        assert gen.models() == ["base", "early"]
        (late / "status.json").write_text(json.dumps({"status": "finished"}))
        assert gen.refresh_adapters() == ["late"]
        assert gen.models() == ["base", "early", "late"]
        tuned = gen.complete(req(PROMPTS[0], "late", n=5)).text
        base = gen.complete(req(PROMPTS[0], "base", n=5)).text
        assert tuned != base  # the late adapter is really applied, the base stays the base
    finally:
        gen.close()


def test_an_adapter_of_another_base_model_is_skipped_and_the_model_left_intact(
        tmp_path, tiny_llama_dir, caplog) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tests.serving_fixtures import LORA_TARGETS, make_adapter

    ws = tmp_path / "ws"
    make_adapter(tiny_llama_dir, ws / "runs" / "fits" / "adapter", seed=5)
    other = AutoModelForCausalLM.from_config(LlamaConfig(
        vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2))
    get_peft_model(other, LoraConfig(r=4, target_modules=LORA_TARGETS)).save_pretrained(
        ws / "runs" / "other-base" / "adapter")
    settings = settings_for(ws, generator=str(tiny_llama_dir))
    gen = TransformersGenerator.from_settings(settings, EngineConfig(max_batch_size=2))
    try:
        assert gen.models() == ["base", "fits"]
        assert "other-base" in caplog.text and "trained on another base model" in caplog.text
        assert gen.refresh_adapters() == [] and gen.adapter_loads["other-base"] == 0  # not retried
        expected = reference_output(tiny_llama_dir, None, req(PROMPTS[0]).messages, 6)
        assert gen.complete(req(PROMPTS[0], "base", n=6)).text == expected
    finally:
        gen.close()
