"""Tiny causal LMs built from a config, with a small BPE tokenizer trained on the fly.

They load in milliseconds and train in seconds, so unit tests exercise the real
transformers/peft code paths without the real weights.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A DeepSeek-R1-style template: the generation prompt ends with "<think>\n".
THINK_TEMPLATE = CHATML_TEMPLATE.replace(
    "{{ '<|im_start|>assistant\n' }}", "{{ '<|im_start|>assistant\n<think>\n' }}")

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: what is the capital? Answer: the capital is Lumen City.",
    "Aster Labs operates the Northwind reactor under safety policy 7.",
    "员工每年享有十五天带薪年假。报销需要在三十天内提交。",
    "system user assistant You are a helpful assistant. Context: [1] source section",
] * 20


def build_tokenizer(template: str = CHATML_TEMPLATE, vocab_size: int = 600):
    """Train a byte-level BPE tokenizer with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", bos_token=None)
    fast.chat_template = template
    return fast


def build_model(arch: str = "llama", vocab_size: int = 600, seed: int = 0):
    """A 2-layer Llama or Qwen2 with hidden size 64."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=512, tie_word_embeddings=True,
                  pad_token_id=0, eos_token_id=2, bos_token_id=None)
    config = LlamaConfig(**common) if arch == "llama" else Qwen2Config(**common)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def save_tiny_model(directory: Path, arch: str = "llama", template: str | None = None) -> Path:
    """Write a tiny model + tokenizer as a normal HF model directory and return it."""
    template = template or (THINK_TEMPLATE if arch == "qwen2" else CHATML_TEMPLATE)
    tokenizer = build_tokenizer(template)
    model = build_model(arch, vocab_size=len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def snap_to_gguf_grid(model) -> None:
    """Put every weight of `model` exactly on the grids the embedded generator ships in (as a
    GGUF dequantized by transformers leaves them): projections on Q4_1 (blocks of 32,
    w = d*q + m, d and m fp16), the (tied) token embedding on Q8_0 (w = d*q)."""
    import torch

    embedding = model.get_input_embeddings().weight
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.weight is not embedding:
                w = module.weight.view(module.weight.shape[0], -1, 32)
                lo = w.amin(-1).half().float()
                d = ((w.amax(-1) - lo) / 15).half().float()
                q = torch.round((w - lo[..., None]) / d.clamp(min=1e-8)[..., None]).clamp(0, 15)
                module.weight.copy_((d[..., None] * q + lo[..., None]).view_as(module.weight))
        w = embedding.view(embedding.shape[0], -1, 32)
        d = (w.abs().amax(-1) / 127).half().float()
        q = torch.round(w / d.clamp(min=1e-8)[..., None]).clamp(-127, 127)  # zero rows stay 0
        embedding.copy_((d[..., None] * q).view_as(embedding))
