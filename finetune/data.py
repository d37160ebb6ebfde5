"""What every training stage hands to the Trainer: datasets, collator, trainer class, stats.

Shared by SFT (`build_sft`, here) and DPO/KTO (`finetune.preference.build_preference`), so that
neither stage imports the run driver (`finetune.train`) and the driver imports both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from finetune.encode import (ChatFormat, EncodeStats, RowCollator, chat_ids, encode_sft,
                             packed_rows, single_rows)
from finetune.packing import PackedCollator
from finetune.trainer import SFTTrainer
from ragtune.errors import DatasetError

log = logging.getLogger(__name__)


class ListDataset:
    """A map-style dataset over a list of feature dicts."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


@dataclass
class StageData:
    """Datasets and Trainer pieces of one stage (see `finetune.train.make_trainer`)."""

    train: Any
    eval: Any
    collator: Any
    trainer_cls: type
    stats: EncodeStats
    think: bool = False
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    args_cls: Any = None  # TrainingArguments or a subclass (TRL DPOConfig/KTOConfig)
    args_kwargs: dict[str, Any] = field(default_factory=dict)
    tokenizer: Any = None
    watch_prompts: list[list[int]] = field(default_factory=list)  # degeneration watch prompts


def watch_prompts(tokenizer: Any, examples: list[Any], n: int) -> list[list[int]]:
    """Prompt ids of `n` validation examples as the server renders them (the turns before the
    answer, chat template with the generation prompt). Retrieval prompts (a user turn with
    context passages) come first: a small model degenerates there (`[1]: [1]: …`) long before
    it does on a closed-book question, so the watch must look where serving will."""
    def has_context(ex: Any) -> bool:
        users = [m["content"] for m in ex.messages if m["role"] == "user"]
        return bool(users) and users[-1].startswith("Context:\n")

    ordered = [ex for ex in examples if has_context(ex)] + [
        ex for ex in examples if not has_context(ex)]
    prompts = []
    for ex in ordered[:n]:
        turns = ex.messages[:-1] if ex.messages[-1]["role"] == "assistant" else ex.messages
        prompts.append(chat_ids(tokenizer, turns, add_generation_prompt=True))
    return prompts


def shortening(stats: EncodeStats, cutoff: int) -> dict[str, int]:
    """Log and return how many rows were fitted to `cutoff` which way (status.json `shortened`)."""
    if stats.shortened:
        log.warning("%d of %d rows were longer than cutoff_len=%d and fit after dropping %d "
                    "whole distractor passages (cited passages and answers kept)",
                    stats.shortened, stats.examples, cutoff, stats.passages_dropped)
    if stats.truncated:
        log.warning("%d of %d rows were still longer than cutoff_len=%d and were cut by tokens",
                    stats.truncated, stats.examples, cutoff)
    return {"rows": stats.examples, "dropped_distractors": stats.shortened,
            "passages_dropped": stats.passages_dropped, "truncated": stats.truncated}


def build_sft(cfg: Any, tokenizer: Any, train: list[Any], evals: list[Any]) -> StageData:
    """Tokenized (and packed) train/validation rows, collator and Trainer class for SFT.

    Packed rows hold whole examples; the collator flattens a micro-batch into one padding-free
    sequence with restarting position ids (transformers' `DataCollatorWithFlattening`)."""
    fmt = ChatFormat(tokenizer)
    enc_train, stats = encode_sft(train, tokenizer, cfg.cutoff_len, fmt)
    enc_eval, _ = encode_sft(evals, tokenizer, cfg.cutoff_len, fmt)
    if not enc_train:
        raise DatasetError(cfg.dataset, "no example has answer tokens left after cutting to "
                           f"cutoff_len={cfg.cutoff_len}", hint="raise --cutoff_len")
    if cfg.packing:
        rows, eval_rows = (packed_rows(enc_train, cfg.cutoff_len, cfg.seed),
                           packed_rows(enc_eval, cfg.cutoff_len, cfg.seed))
        collator: Any = PackedCollator()
    else:
        rows, eval_rows = single_rows(enc_train), single_rows(enc_eval)
        collator = RowCollator(tokenizer.pad_token_id)
    stats.extra = {"rows": len(rows), "eval_examples": len(enc_eval),
                   "fill": round(stats.tokens / max(len(rows) * cfg.cutoff_len, 1), 3)}
    return StageData(ListDataset(rows), ListDataset(eval_rows) if eval_rows else None, collator,
                     SFTTrainer, stats, think=fmt.opens_think, tokenizer=tokenizer,
                     watch_prompts=watch_prompts(tokenizer, evals, cfg.degeneration_samples))
