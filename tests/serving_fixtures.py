"""Fixtures for the API tests: a real uvicorn on loopback (in a thread), a sample corpus with a
StaticRetriever, a canned-reply generator and a reasoning (R1-style) fake generator."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fakes import StaticRetriever
from ragtune.settings import Settings, load_settings
from ragtune.types import Chunk, GenerationRequest, GenerationResult, Generator

CORPUS = [
    ("handbook/leave.md", "Leave", "Employees get 25 days of paid annual leave per calendar year."),
    ("handbook/leave.md", "Leave > Sick", "Sick leave needs a doctor's note after three days."),
    ("handbook/expenses.md", "Expenses", "Expense reports must be filed within 30 days of travel."),
    ("ops/reactor.md", "Safety", "The Northwind reactor is inspected under safety policy 7."),
    ("ops/drills.md", "Safety > Drills", "Fire drills take place every first Monday of the month."),
]


@pytest.fixture(scope="session")
def chunks() -> list[Chunk]:
    return [Chunk(i, src, i, sec, text) for i, (src, sec, text) in enumerate(CORPUS)]


@pytest.fixture(scope="session")
def retriever(chunks: list[Chunk]) -> StaticRetriever:
    return StaticRetriever(chunks)


def settings_for(workspace: Path, **overrides: object) -> Settings:
    """Settings for a test server rooted in `workspace` (env and YAML still apply)."""
    return load_settings(workspace=workspace, **overrides)


class ThinkingGenerator(Generator):
    """An R1-like fake: reasoning in `<think>…</think>`, then an answer citing [1].

    With `open_in_prompt`, the opening tag is left out of the text, as when the chat template
    already put `<think>\\n` into the prompt and the engine did not add it back."""

    def __init__(self, open_in_prompt: bool = False, piece: int = 3) -> None:
        self.open_in_prompt, self.piece = open_in_prompt, piece

    def models(self) -> list[str]:
        return ["base"]

    def text(self, req: GenerationRequest) -> str:
        body = "The first passage covers it.\n</think>\n\nEmployees get 25 days [1]."
        return body if self.open_in_prompt else "<think>\n" + body

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [GenerationResult(self.text(r), 10, 12) for r in requests]

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        text = self.text(request)
        for i in range(0, len(text), self.piece):
            yield text[i:i + self.piece]


@contextmanager
def serving(app) -> Iterator[str]:
    """Run `app` under a real uvicorn (ragtune's h11 config) on a free loopback port."""
    import uvicorn

    from api.commands import uvicorn_config

    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0, "warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP threads
    spinning against other processes make them ~30x slower; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(base_dir: Path, out_dir: Path, seed: int) -> Path:
    """Save a peft LoRA adapter for `base_dir` whose B weights are large random values, so
    that its outputs clearly differ from the base's and from other seeds'."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=4, lora_alpha=16, target_modules=LORA_TARGETS))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 2.0)
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def adapter_workspace(tmp_path_factory, tiny_llama_dir: Path) -> Path:
    """A workspace with two tuned runs (`alpha`, `beta`) and an unfinished one (no weights)."""
    ws = tmp_path_factory.mktemp("adapter-ws")
    make_adapter(tiny_llama_dir, ws / "runs" / "alpha" / "adapter", seed=1)
    make_adapter(tiny_llama_dir, ws / "runs" / "beta" / "adapter", seed=2)
    unfinished = ws / "runs" / "gamma" / "adapter"
    unfinished.mkdir(parents=True)
    (unfinished / "adapter_config.json").write_text(
        (ws / "runs" / "alpha" / "adapter" / "adapter_config.json").read_text())
    return ws


def reference_output(base_dir: Path, adapter_dir: Path | None, messages: list[dict],
                     max_new_tokens: int, banned_first: tuple[int, ...] = ()) -> str:
    """What plain transformers (+ peft with only that adapter) generates for one request,
    greedy, decoded as the engine decodes (up to EOS, special tokens dropped); `banned_first`:
    token ids the first new token may not be (a logits processor of the first step)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    start = ids.shape[1]

    def first_step(seen: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if banned_first and seen.shape[1] == start:
            scores[:, list(banned_first)] = float("-inf")
        return scores

    with torch.inference_mode():
        out = model.eval().generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                    max_new_tokens=max_new_tokens,
                                    logits_processor=LogitsProcessorList([first_step]))
    tokens = out[0, ids.shape[1]:].tolist()
    if tokenizer.eos_token_id in tokens:
        tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
    kept = [t for t in tokens if t not in set(tokenizer.all_special_ids)]
    return tokenizer.decode(kept, skip_special_tokens=False)
