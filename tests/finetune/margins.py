"""Mean log p(chosen) - log p(rejected) of preference pairs under a model (shared by the DPO/KTO
tests): the measure that preference tuning must raise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from trl.trainer.dpo_trainer import DataCollatorForPreference

from finetune.encode import ChatFormat
from finetune.preference import encode_preference


def reply_logps(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the log-probabilities of the completion tokens, per sequence."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = torch.log_softmax(logits[:, :-1].float(), -1)
    token = logps.gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    return (token * batch["completion_mask"][:, 1:]).sum(-1)


def margin(model_dir: Path, examples: list[Any], adapter: Path | None) -> float:
    """Mean log p(chosen) - log p(rejected) under base (+ adapter)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    rows, _ = encode_preference(examples, ChatFormat(tok), 256, "dpo")
    batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)(rows)
    with torch.no_grad():
        logps = reply_logps(model.eval(), batch)
    n = len(rows)
    return float((logps[:n] - logps[n:]).mean())
