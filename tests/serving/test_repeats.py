"""The back-to-back repeat ban (`serving.repeats`): prose, numbers and punctuation runs pass,
loops are cut at the copy too many, and the engine with the ban gives exactly what plain
`generate` gives with the same rule as a logits processor, on a tiny model made to loop."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

from ragtune.types import GenerationRequest
from serving.config import EngineConfig
from serving.engine import TransformersGenerator
from serving.repeats import SHORT_COPIES, SINGLE_COPIES, RepeatBan, allowed_copies


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def ban(tokenizer) -> RepeatBan:
    return RepeatBan(lambda ids: tokenizer.decode(ids))


def first_ban(ban: RepeatBan, ids: list[int]) -> int | None:
    """The index of the first token of `ids` the ban refuses, writing them one by one."""
    return next((i for i in range(1, len(ids)) if ban.bans(ids[:i], ids[i])), None)


@pytest.mark.parametrize("text", [
    "The quick brown fox jumps over the lazy dog. Question: what is the capital? Answer: the "
    "capital is Lumen City [1].\n[1]: \"the capital is Lumen City\"",
    "The budget is 1000000 yuan, or 1,000,000.",
    "员工每年享有十五天带薪年假。哈哈哈。",
    "| a | b |\n|---|---|---|---|---|\nWait......... then ---- and ====",
    "Version 1.1.1 of policy 7 [1] [2] [3] [4].",
    "The capital is Lumen City [1].\n[1]: \"Question: what is the capital? Answer: the capital "
    "is Lumen City.\" Aster Labs operates the Northwind reactor.",
])
def test_prose_numbers_and_punctuation_runs_are_never_banned(ban, tokenizer, text) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert first_ban(ban, ids) is None


@pytest.mark.parametrize("unit_text", [" [4]", "1.", " capital", "年假",
                                       " the capital is Lumen City.", "员工每年享有十五天带薪年假。"])
def test_a_loop_is_cut_at_the_copy_too_many(tokenizer, unit_text) -> None:
    ban = RepeatBan(lambda ids: tokenizer.decode(ids), ngram_copies=0)  # back to back only
    unit = tokenizer(unit_text, add_special_tokens=False)["input_ids"]
    copies = allowed_copies(len(unit))
    assert copies == (SINGLE_COPIES if len(unit) == 1 else SHORT_COPIES if len(unit) < 8 else 1)
    # The last token of copy `copies + 1` is the first one refused.
    assert first_ban(ban, unit * 12) == len(unit) * (copies + 1) - 1


@pytest.mark.parametrize("lines", [
    ["1. 1.1.1.1\n", "2. 2.1.1.1\n", "3. 3.1.1.1\n", "4. 4.1.1.1\n", "5. 5.1.1.1"],
    ["The answer is: 8.1.3.\n\n", "The answer is: 8.1.3.\n", "The answer is: 8.1.3.\n"],
])
def test_a_near_loop_is_cut_at_a_third_copy(ban, tokenizer, lines) -> None:
    """Lines that come back with a counter or nothing changed: the third copy of a 4-gram
    within 64 tokens is refused, after the first line and before the third ends."""
    ids = tokenizer("".join(lines), add_special_tokens=False)["input_ids"]
    at = first_ban(ban, ids)
    assert at is not None
    assert len(lines[0]) < len(tokenizer.decode(ids[:at])) < len("".join(lines[:3]))
    far = ids[:12] + tokenizer(" fox" * 30, add_special_tokens=False)["input_ids"]
    spread = RepeatBan(ban.decode, window=len(far) - 2)  # the first copies left the window
    assert not spread._near_loop(far + ids[:11], ids[11])


def test_a_unit_of_punctuation_only_may_repeat(ban, tokenizer) -> None:
    unit = tokenizer(" ...", add_special_tokens=False)["input_ids"]
    assert first_ban(ban, unit * 20) is None


class BanProcessor:
    """The same rule as the engine's, as a logits processor for plain `generate`: the greedy
    choice, and while it is banned, the next best."""

    def __init__(self, ban: RepeatBan, start: int) -> None:
        self.ban, self.start = ban, start

    def __call__(self, seen: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for row in range(scores.shape[0]):
            written = seen[row, self.start:].tolist()
            token = int(scores[row].argmax())
            while self.ban.bans(written, token):
                scores[row, token] = float("-inf")
                token = int(scores[row].argmax())
        return scores


def looping_model(base_dir, words: list[int]):
    """The tiny model with a head bias that makes it prefer `words[0]`, then `words[1]`, ...
    whatever the context: left alone it writes words[0] forever."""
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    head.weight = model.lm_head.weight
    with torch.no_grad():
        head.bias.zero_()
        for rank, token in enumerate(words):
            head.bias[token] = 60.0 - 10 * rank
    model.lm_head = head
    return model


def test_the_engine_bans_as_generate_with_the_rule_does(tiny_llama_dir, tokenizer, ban) -> None:
    words = [tokenizer(w, add_special_tokens=False)["input_ids"][0]
             for w in (" capital", " fox", " dog", " City")]
    model = looping_model(tiny_llama_dir, words)
    messages = [{"role": "user", "content": "What is the capital?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=40, logits_processor=LogitsProcessorList(
                                 [BanProcessor(ban, ids.shape[1])]))
    expected = out[0, ids.shape[1]:].tolist()
    assert expected.count(words[0]) < 40 and words[1] in expected  # the ban did act
    gen = TransformersGenerator(model, tokenizer, EngineConfig(
        max_batch_size=4, repeat_guard_tokens=0, weight_kernel="dense"))
    try:
        result = gen.complete(GenerationRequest(messages, "base", 40))
        unbanned = TransformersGenerator(model, tokenizer, EngineConfig(
            max_batch_size=4, repeat_guard_tokens=0, repeat_ban=False, weight_kernel="dense"))
        try:
            loop = unbanned.complete(GenerationRequest(messages, "base", 40))
        finally:
            unbanned.close()
    finally:
        gen.close()
    assert result.text == tokenizer.decode(expected)
    assert loop.text == tokenizer.decode([words[0]] * 40)
