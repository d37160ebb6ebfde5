"""Padding-free packing (transformers' DataCollatorWithFlattening + position ids): a packed
micro-batch gives the loss and LoRA gradients of the same examples trained one by one, in fp32
and bf16, on tiny Llama and Qwen2 (Qwen2 with a sliding window shorter than the examples too)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from finetune.encode import IGNORE, encode_sft, packed_rows
from finetune.packing import PackedCollator
from finetune.trainer import SFTTrainer
from ragtune.datasets import SFTExample
from tests.tiny_models import build_model, build_tokenizer

QA = [("What is the capital?", "The capital is Lumen City."),
      ("Who runs the reactor?", "Aster Labs runs the Northwind reactor under safety policy 7."),
      ("员工每年享有多少天年假？", "十五天带薪年假。"),
      ("Which policy applies?", "Safety policy 7 applies."),
      ("What jumps?", "The quick brown fox jumps over the lazy dog.")]
# (rtol, atol) of the loss and of each gradient: bf16 keeps 8 bits of mantissa, so sums over
# differently shaped matmuls differ in the 2nd-3rd significant digit.
TOLERANCE = {torch.float32: (1e-4, 1e-5), torch.bfloat16: (3e-2, 3e-3)}


def lora_model(arch: str, dtype: torch.dtype, vocab: int, sliding: bool = False) -> Any:
    from peft import LoraConfig, get_peft_model

    model = build_model(arch, vocab_size=vocab)
    if sliding:  # every layer attends to the last 6 tokens only
        from transformers import AutoModelForCausalLM

        cfg = model.config
        cfg.use_sliding_window, cfg.sliding_window, cfg.max_window_layers = True, 6, 0
        cfg.layer_types = ["sliding_attention"] * cfg.num_hidden_layers
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg)
    model.config._attn_implementation = "sdpa"
    model = get_peft_model(model.to(dtype), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                       target_modules="all-linear"))
    torch.manual_seed(1)
    with torch.no_grad():  # B starts at zero: give it values so that A gets gradients too
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return model


def loss_of(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """ragtune's SFT loss (mean over answer tokens) for one batch."""
    trainer = SFTTrainer.__new__(SFTTrainer)  # only compute_loss is used: no Trainer set-up
    trainer._tokens_base, trainer._tokens_local, trainer.model = None, 0, model
    batch = {k: v for k, v in batch.items() if k != "n_tokens"}  # counted by the Trainer state
    return trainer.compute_loss(model, batch, num_items_in_batch=None)


def grads(model: Any) -> dict[str, torch.Tensor]:
    out = {n: p.grad.detach().float().clone() for n, p in model.named_parameters()
           if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("arch,sliding", [("llama", False), ("qwen2", False), ("qwen2", True)],
                         ids=["llama", "qwen2", "qwen2-sliding"])
def test_packed_batch_matches_examples_one_by_one(arch: str, sliding: bool,
                                                  dtype: torch.dtype) -> None:
    tok = build_tokenizer()
    examples = [SFTExample([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
                for q, a in QA]
    enc, _ = encode_sft(examples, tok, cutoff=256)
    model = lora_model(arch, dtype, len(tok), sliding)
    model.train()
    rows = packed_rows(enc, 120, seed=0)
    assert len(rows) >= 2 and any(len(r["examples"]) > 1 for r in rows)  # several per row
    batch = PackedCollator(flash_kwargs=False)(rows)
    assert batch["input_ids"].shape == (1, sum(len(e) for e in enc))  # no padding at all
    packed = loss_of(model, batch)
    packed.backward()
    packed_grads = grads(model)

    total = sum(len(e.response) for e in enc)  # answer tokens, each predicted once
    alone = torch.zeros((), dtype=torch.float32)
    for e in enc:
        one = {"input_ids": torch.tensor([e.input_ids]), "labels": torch.tensor([e.labels])}
        part = loss_of(model, one) * (len(e.response) / total)
        part.backward()
        alone = alone + part.detach().float()
    alone_grads = grads(model)

    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(packed.detach().float(), alone, rtol=rtol, atol=atol)
    assert packed_grads.keys() == alone_grads.keys() and packed_grads
    for name, grad in packed_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, alone_grads[name], rtol=rtol, atol=atol, msg=name)


def test_flattened_labels_never_cross_examples() -> None:
    tok = build_tokenizer()
    examples = [SFTExample([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
                for q, a in QA[:3]]
    enc, _ = encode_sft(examples, tok, cutoff=256)
    batch = PackedCollator(flash_kwargs=True)(packed_rows(enc, 512, seed=0))
    pos = batch["position_ids"][0].tolist()
    starts = [i for i, p in enumerate(pos) if p == 0]
    assert len(starts) == 3 and all(batch["labels"][0, s] == IGNORE for s in starts)
    assert batch["cu_seq_lens_q"].tolist() == starts + [len(pos)]  # flash-attention's varlen
    assert int(batch["n_tokens"]) == len(pos)
