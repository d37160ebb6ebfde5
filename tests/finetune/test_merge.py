"""`finetune merge`: a plain HF directory that behaves exactly like base + adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from finetune.commands import merge
from finetune.encode import chat_ids
from finetune.runs import RunPaths
from ragtune.errors import ConfigError, NotFoundError
from tests.finetune.test_train import FACTS, llama_run, one_thread  # noqa: F401 - fixtures


def test_merged_model_equals_base_plus_adapter(llama_run: RunPaths, tiny_llama_dir: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ws = llama_run.root.parent.parent
    assert merge("tiny", workspace=ws) == 0
    out = ws / "models" / "tiny-merged"
    assert str(out) in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert "adapter_config.json" not in names and not any(n.startswith(".") for n in names)

    merged = AutoModelForCausalLM.from_pretrained(out).eval()  # transformers alone, no peft
    assert not hasattr(merged, "peft_config")
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                                      str(llama_run.adapter)).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == AutoTokenizer.from_pretrained(tiny_llama_dir).chat_template
    for question, _ in FACTS:
        msgs = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": question}]
        ids = torch.tensor([chat_ids(tok, msgs, add_generation_prompt=True)])
        with torch.no_grad():
            lm, lt, lb = (m(input_ids=ids).logits for m in (merged, tuned, base))
            torch.testing.assert_close(lm, lt, atol=1e-4, rtol=1e-4)
            assert not torch.allclose(lm, lb, atol=1e-3)  # the merge did change the model
            kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
            assert torch.equal(merged.generate(ids, **kw), tuned.generate(ids, **kw))


def test_merge_refuses_a_quantized_base(llama_run: RunPaths, tiny_llama_dir: Path,
                                        tmp_path: Path) -> None:
    quantized = tmp_path / "quantized-base"
    shutil.copytree(tiny_llama_dir, quantized)
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True,
                                     "bnb_4bit_quant_type": "nf4"}
    (quantized / "config.json").write_text(json.dumps(config))
    ws = llama_run.root.parent.parent
    out = tmp_path / "merged"
    with pytest.raises(ConfigError) as info:
        merge("tiny", workspace=ws, output=out, base=str(quantized))
    assert "quantized (bitsandbytes)" in str(info.value) and "unquantized" in str(info.value)
    assert not out.exists()


def test_merge_unknown_run(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        merge("nope", workspace=tmp_path)
