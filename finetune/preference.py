"""DPO and KTO on top of `transformers.Trainer` (compact; the same outputs and resume as SFT).

The reference model is the policy as it starts (the SFT adapter given with `--adapter`, or the
base model), so its log-probabilities are computed once before training and stored with each
example: no second model in memory and no extra forward pass per step. Prompts use the same
chat-template rendering as SFT and serving (`finetune.encode.ChatFormat`), so DeepSeek-R1's
`<think>\\n` generation prompt is kept (TRL's conversational path drops it from the prompt).

DPO: Rafailov et al. 2023, sigmoid loss. KTO: Ethayarajh et al. 2024, with the reference
point z estimated as the batch mean of the policy/reference log-ratio (clamped at 0, detached).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F

from finetune.encode import IGNORE, ChatFormat, Encoded, fit_lengths, truncate
from finetune.trainer import RagtuneTrainer
from ragtune.errors import DatasetError

log = logging.getLogger(__name__)


def _encode_pair(fmt: ChatFormat, messages: list, replies: list[str], cutoff: int
                 ) -> tuple[list[int], list[list[int]], bool]:
    """Shared prompt ids and one id list per reply, cut so prompt + longest reply fit."""
    from finetune.encode import chat_ids

    prompt = chat_ids(fmt.tokenizer, messages, add_generation_prompt=True)
    outs = [fmt.tokenizer(fmt.answer_text(r), add_special_tokens=False)["input_ids"]
            for r in replies]
    longest = max(len(o) for o in outs)
    if len(prompt) + longest <= cutoff:
        return prompt, outs, False
    p_len, r_len = fit_lengths(len(prompt), longest, cutoff)
    prompt = truncate(Encoded(prompt, []), p_len).prompt if p_len < len(prompt) else prompt
    return prompt, [o[:r_len] for o in outs], True


def encode_preference(examples: list[Any], fmt: ChatFormat, cutoff: int, stage: str
                      ) -> tuple[list[dict[str, Any]], int]:
    """Rows for DPO ({prompt, chosen, rejected}) or KTO ({prompt, completion, label})."""
    rows, truncated = [], 0
    for ex in examples:
        if stage == "dpo":
            prompt, (chosen, rejected), cut = _encode_pair(
                fmt, ex.messages, [ex.chosen, ex.rejected], cutoff)
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        elif hasattr(ex, "chosen"):  # a preference pair used for KTO: one good, one bad
            prompt, (chosen, rejected), cut = _encode_pair(
                fmt, ex.messages, [ex.chosen, ex.rejected], cutoff)
            rows += [{"prompt": prompt, "completion": chosen, "label": True},
                     {"prompt": prompt, "completion": rejected, "label": False}]
        else:
            prompt, (completion,), cut = _encode_pair(fmt, ex.messages, [ex.completion], cutoff)
            rows.append({"prompt": prompt, "completion": completion, "label": bool(ex.label)})
        truncated += int(cut)
    rows = [r for r in rows if all(r.get(k, [0]) for k in ("chosen", "rejected", "completion"))]
    return rows, truncated


def _completions(row: dict[str, Any]) -> list[list[int]]:
    return [row["chosen"], row["rejected"]] if "chosen" in row else [row["completion"]]


class PreferenceCollator:
    """Pads prompt+completion sequences: DPO puts all chosen first, then all rejected."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        seqs, labels, refs = [], [], []
        columns = list(zip(*[_completions(r) for r in rows], strict=True))
        for k, column in enumerate(columns):
            for row, completion in zip(rows, column, strict=True):
                seqs.append(row["prompt"] + completion)
                labels.append([IGNORE] * len(row["prompt"]) + completion)
                refs.append(row.get("ref", [0.0] * len(columns))[k])
        width = max(len(s) for s in seqs)
        batch = {
            "input_ids": torch.tensor([s + [self.pad_id] * (width - len(s)) for s in seqs]),
            "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs]),
            "labels": torch.tensor([lab + [IGNORE] * (width - len(lab)) for lab in labels]),
            "ref_logps": torch.tensor(refs, dtype=torch.float32),
            "n_tokens": torch.tensor(sum(len(s) for s in seqs)),
        }
        if "label" in rows[0]:
            batch["kto_label"] = torch.tensor([r["label"] for r in rows])
        return batch


def sequence_logps(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """Sum of log-probabilities of the labelled (completion) tokens, per sequence."""
    labels = inputs["labels"]
    targets = torch.full_like(labels, IGNORE)
    targets[:, :-1] = labels[:, 1:]
    keep = targets.ne(IGNORE)
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                logits_to_keep=keep, use_cache=False)
    logits = out.logits.reshape(-1, out.logits.shape[-1]).float()
    token_logps = -F.cross_entropy(logits, targets[keep], reduction="none")
    rows = keep.nonzero()[:, 0]
    return torch.zeros(labels.shape[0], device=logits.device).index_add_(0, rows, token_logps)


class PreferenceTrainer(RagtuneTrainer):
    """DPO (sigmoid) or KTO loss against precomputed reference log-probabilities."""

    loss_is_scaled_for_ga = False  # per-micro-batch mean; the Trainer divides by GA steps

    def __init__(self, *args: Any, stage: str = "dpo", beta: float = 0.1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self.stage, self.beta = stage, beta
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list),
                                                             "eval": defaultdict(list)}

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any],
                     return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        self._count_tokens(inputs)
        logps = sequence_logps(model, inputs)
        ratios = logps - inputs["ref_logps"].to(logps.device)
        if self.stage == "dpo":
            loss, metrics = self._dpo(logps, ratios)
        else:
            loss, metrics = self._kto(ratios, inputs["kto_label"].to(logps.device))
        bucket = self._metrics["train" if model.training else "eval"]
        for key, value in metrics.items():
            bucket[key].append(float(value))
        return (loss, {"logps": logps}) if return_outputs else loss

    def _dpo(self, logps: torch.Tensor, ratios: torch.Tensor) -> tuple[torch.Tensor, dict]:
        n = logps.shape[0] // 2
        chosen, rejected = self.beta * ratios[:n], self.beta * ratios[n:]
        loss = -F.logsigmoid(chosen - rejected).mean()
        return loss, {"rewards/chosen": chosen.mean().item(),
                      "rewards/rejected": rejected.mean().item(),
                      "rewards/margins": (chosen - rejected).mean().item(),
                      "rewards/accuracies": (chosen > rejected).float().mean().item(),
                      "logps/chosen": logps[:n].mean().item(),
                      "logps/rejected": logps[n:].mean().item()}

    def _kto(self, ratios: torch.Tensor, good: torch.Tensor) -> tuple[torch.Tensor, dict]:
        z = ratios.detach().mean().clamp(min=0)
        value = torch.where(good, 1 - torch.sigmoid(self.beta * (ratios - z)),
                            1 - torch.sigmoid(self.beta * (z - ratios)))
        metrics = {"kl": z.item()}
        if good.any():
            metrics["rewards/chosen"] = (self.beta * ratios[good]).mean().item()
        if (~good).any():
            metrics["rewards/rejected"] = (self.beta * ratios[~good]).mean().item()
        return value.mean(), metrics

    def prediction_step(self, model: torch.nn.Module, inputs: dict[str, Any],
                        prediction_loss_only: bool, ignore_keys: list[str] | None = None) -> Any:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, dict(inputs))
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the averaged DPO/KTO metrics of the logging window (train or eval)."""
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        for key, values in self._metrics[mode].items():
            if values:
                logs[prefix + key] = sum(values) / len(values)
        self._metrics[mode].clear()
        super().log(logs, start_time)


@torch.no_grad()
def add_reference_logps(trainer: PreferenceTrainer, *datasets: Any) -> None:
    """Store the starting policy's log-probs as each row's reference (`row["ref"]`)."""
    model = trainer.model
    model.to(trainer.args.device)
    was_training = model.training
    model.eval()
    collate = trainer.data_collator
    size = max(trainer.args.per_device_eval_batch_size, 1)
    for ds in datasets:
        if ds is None:
            continue
        rows = ds.rows
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            batch = {k: v.to(trainer.args.device) if hasattr(v, "to") else v
                     for k, v in collate(chunk).items()}
            logps = sequence_logps(model, batch).cpu().tolist()
            k = len(logps) // len(chunk)
            for i, row in enumerate(chunk):
                row["ref"] = [logps[j * len(chunk) + i] for j in range(k)]
    model.train(was_training)


def build_preference(cfg: Any, tokenizer: Any, train: list[Any], evals: list[Any]) -> dict:
    """Rows, collator and trainer for `--stage dpo|kto`."""
    from finetune.encode import EncodeStats
    from finetune.train import ListDataset

    if cfg.adapter is None:
        log.warning("--stage %s without --adapter: the reference is the base model; preference "
                    "tuning usually starts from an SFT run (--adapter RUN_NAME)", cfg.stage)
    fmt = ChatFormat(tokenizer)
    rows, truncated = encode_preference(train, fmt, cfg.cutoff_len, cfg.stage)
    eval_rows, _ = encode_preference(evals, fmt, cfg.cutoff_len, cfg.stage)
    if not rows:
        raise DatasetError(cfg.dataset, "no example has reply tokens left after cutting to "
                           f"cutoff_len={cfg.cutoff_len}", hint="raise --cutoff_len")
    tokens = sum(len(r["prompt"]) + sum(len(c) for c in _completions(r)) for r in rows)
    stats = EncodeStats(examples=len(train), kept=len(rows), truncated=truncated, tokens=tokens,
                        extra={"rows": len(rows), "eval_examples": len(eval_rows)})
    train_ds, eval_ds = ListDataset(rows), (ListDataset(eval_rows) if eval_rows else None)
    return {"train": train_ds, "eval": eval_ds, "collator": PreferenceCollator(tokenizer.pad_token_id),
            "trainer_cls": PreferenceTrainer, "stats": stats, "think": fmt.opens_think,
            "trainer_kwargs": {"stage": cfg.stage, "beta": cfg.pref_beta},
            "prepare": lambda trainer: add_reference_logps(trainer, train_ds, eval_ds)}
