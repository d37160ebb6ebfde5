"""Tokenization with the model's own template, the answer-only mask, truncation and packing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ragtune.datasets import SFTExample
from finetune.encode import (IGNORE, ChatFormat, RowCollator, chat_ids, encode_sft, fit_lengths,
                             pack, packed_rows, single_rows)
from finetune.packing import PackedCollator


def example(question: str, answer: str, system: str | None = None) -> SFTExample:
    msgs = [{"role": "system", "content": system}] if system else []
    return SFTExample(msgs + [{"role": "user", "content": question},
                              {"role": "assistant", "content": answer}])


@pytest.fixture(scope="module")
def llama_tok(tiny_llama_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def qwen_tok(tiny_qwen2_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_qwen2_dir)


def test_labels_cover_only_the_answer(llama_tok) -> None:
    ex = example("What is the capital?", "The capital is Lumen City.", "Be brief.")
    (enc,), stats = encode_sft([ex], llama_tok, cutoff=512)
    served = chat_ids(llama_tok, ex.messages[:-1], add_generation_prompt=True)
    assert enc.prompt == served  # trained on exactly the prompt the server renders
    assert enc.input_ids[: len(served)] == served
    labels = enc.labels
    assert labels[: len(served)] == [IGNORE] * len(served)
    assert all(t != IGNORE for t in labels[len(served):])
    assert llama_tok.decode(enc.response) == "The capital is Lumen City.<|im_end|>"
    assert stats.kept == 1 and stats.response_tokens == len(enc.response)


def test_think_template_trains_after_the_served_prompt(qwen_tok) -> None:
    ex = example("What is the capital?", "Lumen City.")
    fmt = ChatFormat(qwen_tok)
    assert fmt.opens_think
    (enc,), _ = encode_sft([ex], qwen_tok, cutoff=512, fmt=fmt)
    served_text = qwen_tok.apply_chat_template(ex.messages[:-1], tokenize=False,
                                               add_generation_prompt=True)
    assert served_text.endswith("<|im_start|>assistant\n<think>\n")
    assert enc.prompt == chat_ids(qwen_tok, ex.messages[:-1], add_generation_prompt=True)
    assert qwen_tok.decode(enc.prompt).endswith("<think>\n")
    # An answer without reasoning becomes an empty thinking block, then the answer.
    assert qwen_tok.decode(enc.response) == "\n</think>\n\nLumen City.<|im_end|>"
    # An answer that carries its own reasoning keeps it (without repeating "<think>").
    (enc2,), _ = encode_sft([example("Q?", "<think>\nLook it up.\n</think>\n\nA.")], qwen_tok,
                            cutoff=512, fmt=fmt)
    assert qwen_tok.decode(enc2.response) == "\nLook it up.\n</think>\n\nA.<|im_end|>"


def test_truncation_keeps_question_and_some_answer(llama_tok) -> None:
    ex = example("Question: " + "context " * 300 + "what is the capital?",
                 "The capital is Lumen City. " * 10, "System head.")
    (enc,), stats = encode_sft([ex], llama_tok, cutoff=64)
    assert len(enc) <= 64 and stats.truncated == 1
    assert llama_tok.decode(enc.prompt).endswith("capital?<|im_end|>\n<|im_start|>assistant\n")
    assert llama_tok.decode(enc.prompt).startswith("<|im_start|>system")
    assert 0 < len(enc.response) < len(llama_tok("The capital is Lumen City. " * 10)["input_ids"])
    assert fit_lengths(10, 5, 64) == (10, 5)
    assert sum(fit_lengths(300, 200, 64)) == 64


def test_pack_fills_rows_without_overflow() -> None:
    lengths = [300, 120, 700, 90, 450, 60, 1000, 30, 512, 8]
    rows = pack(lengths, 1024, seed=1)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 1024 for r in rows)
    assert 4 <= len(rows) <= 5  # 3270 tokens need at least 4 rows of 1024
    assert rows == pack(lengths, 1024, seed=1)  # deterministic


def test_packed_rows_hold_whole_examples_and_padding_is_never_trained(llama_tok) -> None:
    exs = [example(f"Question {i}?", f"Answer {i}.") for i in range(3)]
    enc, _ = encode_sft(exs, llama_tok, cutoff=512)
    (row,) = packed_rows(enc, 512, seed=0)
    assert sorted(len(e["input_ids"]) for e in row["examples"]) == sorted(len(e) for e in enc)
    batch = RowCollator(llama_tok.pad_token_id)(single_rows(enc[:2]))  # unpacked: padded rows
    assert batch["input_ids"].shape[1] % 8 == 0
    assert int(batch["n_tokens"]) == len(enc[0]) + len(enc[1])
    shorter = min(range(2), key=lambda i: len(enc[i]))
    assert (batch["labels"][shorter, len(enc[shorter]):] == IGNORE).all()


def test_packed_samples_do_not_attend_to_each_other(tiny_llama_dir: Path, llama_tok) -> None:
    """Logits of a sample packed after others equal its logits alone; naive concatenation differs."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    exs = [example("What is the capital?", "Lumen City."),
           example("Who runs the reactor?", "Aster Labs runs the Northwind reactor."),
           example("员工每年享有多少天年假？", "十五天。")]
    enc, _ = encode_sft(exs, llama_tok, cutoff=512)
    batch = PackedCollator(flash_kwargs=False)(packed_rows(enc, 512, seed=0))
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       use_cache=False).logits[0]
        naive = model(input_ids=batch["input_ids"], use_cache=False).logits[0]
        positions = batch["position_ids"][0].tolist()
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
        for a, b in zip(starts, starts[1:], strict=False):
            alone = model(input_ids=batch["input_ids"][:, a:b], use_cache=False).logits[0]
            torch.testing.assert_close(packed[a:b], alone, atol=1e-5, rtol=1e-4)
    later = starts[1]
    assert not torch.allclose(naive[later:], packed[later:], atol=1e-3)


def test_a_template_that_cannot_render_an_answer_is_an_error(tiny_llama_dir: Path) -> None:
    """No silent EOS-only fallback: the error names the template problem."""
    from transformers import AutoTokenizer

    from ragtune.errors import ConfigError

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' %}"
                         "{{ raise_exception('assistant turns are not supported') }}{% endif %}"
                         "{{ m['content'] }}{% endfor %}")
    with pytest.raises(ConfigError) as err:
        ChatFormat(tok)
    assert "chat template" in str(err.value) and "assistant turns are not supported" in str(
        err.value)
