"""`--stage dpo|kto`: preference tuning through TRL's `DPOTrainer` and `KTOTrainer`.

What ragtune adds around TRL:
- Rows are tokenized here with the chat rendering of SFT and serving (`finetune.encode.ChatFormat`)
  and handed to TRL as `prompt_ids`/`chosen_ids`/`rejected_ids` (KTO: `completion_ids`, `label`),
  so DeepSeek-R1's `<think>\\n` generation prompt is kept and the prompt is exactly the one the
  server renders (TRL's own text path re-tokenizes prompt + reply and cuts at the common prefix,
  which drops that prompt end when tokens merge across the boundary). `_prepare_dataset` is the
  one TRL method overridden for it.
- The reference is the policy as it starts (the SFT adapter given with `--adapter`, or the base
  model): TRL copies a pretrained adapter into a frozen "ref" adapter, and with
  `precompute_ref_log_probs` its log-probabilities are computed once before training, so no
  second model sits in memory and no extra forward runs per step.
- Long rows are cut by ragtune's rule (`fit_lengths`: prompt middle, reply end), so TRL's
  `max_length` is off; the NaN guard of the SFT trainer applies too (`NonFiniteGuard`).

DPO: Rafailov et al. 2023, sigmoid loss. KTO: Ethayarajh et al. 2024, TRL's KL estimate from
mismatched prompt/completion pairs within a batch (so KTO needs per_device_batch_size >= 2).
TRL disables dropout in the policy (its `disable_dropout` default), so `lora_dropout` does not
apply to these stages.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from datasets import Dataset
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

from finetune.data import StageData, watch_prompts
from finetune.encode import ChatFormat, EncodeStats, Encoded, chat_ids, fit_lengths, truncate
from finetune.shorten import drop_distractors
from finetune.trainer import NonFiniteGuard
from finetune.watch import WatchMixin
from ragtune.errors import DatasetError

log = logging.getLogger(__name__)


def _encode_pair(fmt: ChatFormat, messages: list, replies: list[str], cutoff: int,
                 stats: EncodeStats) -> tuple[list[int], list[list[int]]]:
    """Shared prompt ids and one id list per reply, fitted so prompt + longest reply <= cutoff:
    uncited context passages go first (`finetune.shorten`), then the prompt middle and the
    replies' ends (`fit_lengths`)."""
    def encode(msgs: list, reps: list[str]) -> tuple[list[int], list[list[int]]]:
        prompt = chat_ids(fmt.tokenizer, msgs, add_generation_prompt=True)
        return prompt, [fmt.tokenizer(fmt.answer_text(r), add_special_tokens=False)["input_ids"]
                        for r in reps]

    def too_long(msgs: list, reps: list[str]) -> bool:
        prompt, outs = encode(msgs, reps)
        return len(prompt) + max(len(o) for o in outs) > cutoff

    prompt, outs = encode(messages, replies)
    if len(prompt) + max(len(o) for o in outs) <= cutoff:
        return prompt, outs
    row = drop_distractors(messages, replies, too_long)
    if row.dropped:
        prompt, outs = encode(row.messages, row.replies)
        stats.passages_dropped += row.dropped
        stats.shortened += 1
    longest = max(len(o) for o in outs)
    if len(prompt) + longest <= cutoff:
        return prompt, outs
    stats.truncated += 1
    stats.shortened -= int(row.dropped > 0)
    p_len, r_len = fit_lengths(len(prompt), longest, cutoff)
    prompt = truncate(Encoded(prompt, []), p_len).prompt if p_len < len(prompt) else prompt
    return prompt, [o[:r_len] for o in outs]


def encode_preference(examples: list[Any], fmt: ChatFormat, cutoff: int, stage: str
                      ) -> tuple[list[dict[str, Any]], EncodeStats]:
    """TRL rows for DPO ({prompt_ids, chosen_ids, rejected_ids}) or KTO ({prompt_ids,
    completion_ids, label}; a chosen/rejected pair gives one good and one bad row)."""
    rows, stats = [], EncodeStats(examples=len(examples))
    for ex in examples:
        if stage == "dpo":
            prompt, (chosen, rejected) = _encode_pair(
                fmt, ex.messages, [ex.chosen, ex.rejected], cutoff, stats)
            rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
        elif hasattr(ex, "chosen"):
            prompt, (chosen, rejected) = _encode_pair(
                fmt, ex.messages, [ex.chosen, ex.rejected], cutoff, stats)
            rows += [{"prompt_ids": prompt, "completion_ids": chosen, "label": True},
                     {"prompt_ids": prompt, "completion_ids": rejected, "label": False}]
        else:
            prompt, (completion,) = _encode_pair(fmt, ex.messages, [ex.completion], cutoff,
                                                 stats)
            rows.append({"prompt_ids": prompt, "completion_ids": completion,
                         "label": bool(ex.label)})
    replies = ("chosen_ids", "rejected_ids", "completion_ids")
    rows = [r for r in rows if all(r[k] for k in replies if k in r)]
    stats.kept = len(rows)
    stats.tokens = sum(len(v) for r in rows for k, v in r.items() if k.endswith("_ids"))
    return rows, stats


class DPORun(NonFiniteGuard, WatchMixin, DPOTrainer):
    """TRL's DPOTrainer on rows that `encode_preference` already tokenized."""

    def _prepare_dataset(self, dataset: Dataset, processing_class: Any, args: Any,
                         dataset_name: str) -> Dataset:
        return dataset


class KTORun(NonFiniteGuard, WatchMixin, KTOTrainer):
    """TRL's KTOTrainer on tokenized rows; adds TRL's mismatched KL completions (each batch's
    completions rotated by one, as `KTOTrainer._prepare_dataset` does)."""

    def _prepare_dataset(self, dataset: Dataset, processing_class: Any, args: Any,
                         dataset_name: str) -> Dataset:
        if not self.calculate_KL:
            return dataset

        def rotate(batch: dict[str, list]) -> dict[str, list]:
            done = batch["completion_ids"]
            batch["KL_completion_ids"] = [done[-1]] + done[:-1]
            return batch

        return dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)


def build_preference(cfg: Any, tokenizer: Any, train: list[Any], evals: list[Any]) -> StageData:
    """Tokenized rows, TRL trainer class and its config for `--stage dpo|kto`."""
    if cfg.adapter is None:
        log.warning("--stage %s without --adapter: the reference is the base model; preference "
                    "tuning usually starts from an SFT run (--adapter RUN_NAME)", cfg.stage)
    fmt = ChatFormat(tokenizer)
    if cfg.stage == "kto":  # KTO samples in order (its KL pairs are built per batch): mix the
        train = list(train)  # examples here, keeping each pair's good and bad rows together
        random.Random(cfg.seed).shuffle(train)
    rows, stats = encode_preference(train, fmt, cfg.cutoff_len, cfg.stage)
    eval_rows, _ = encode_preference(evals, fmt, cfg.cutoff_len, cfg.stage)
    if not rows:
        raise DatasetError(cfg.dataset, "no example has reply tokens left after cutting to "
                           f"cutoff_len={cfg.cutoff_len}", hint="raise --cutoff_len")
    stats.extra = {"rows": len(rows), "eval_examples": len(eval_rows)}
    common = {"beta": cfg.pref_beta, "precompute_ref_log_probs": True, "max_length": None,
              "include_num_input_tokens_seen": "non_padding",
              "gradient_checkpointing": cfg.gradient_checkpointing,  # TRL's default is True
              "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    args_cls, trainer_cls = (DPOConfig, DPORun) if cfg.stage == "dpo" else (KTOConfig, KTORun)
    if cfg.stage == "dpo":
        common["loss_type"] = ["sigmoid"]
    return StageData(Dataset.from_list(rows), Dataset.from_list(eval_rows) if eval_rows else None,
                     None, trainer_cls, stats, think=fmt.opens_think, tokenizer=tokenizer,
                     watch_prompts=watch_prompts(tokenizer, evals, cfg.degeneration_samples),
                     trainer_kwargs={"processing_class": tokenizer}, args_cls=args_cls,
                     args_kwargs=common)
