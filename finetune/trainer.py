"""`transformers.Trainer` subclasses: response-only SFT loss and a NaN guard.

Everything else (optimizer, scheduler, gradient accumulation, checkpoints, resume with
optimizer/scheduler/RNG/data position, DDP) is the stock Trainer's.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from finetune.encode import IGNORE
from finetune.watch import WatchMixin
from ragtune.errors import TrainingError

log = logging.getLogger(__name__)


class NonFiniteLoss(TrainingError):
    """The loss or the gradients became NaN/inf; the weights were not updated with them."""


class NonFiniteGuard:
    """Trainer mixin: stop on a non-finite loss, never write a checkpoint with NaN/inf weights.

    Mixed into ragtune's SFT trainer and into TRL's DPO/KTO trainers (`finetune.preference`)."""

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            raise NonFiniteLoss(
                f"the training loss became {float(loss)} at step {self.state.global_step + 1}; "
                "stopped before the optimizer step, so no weights were updated with it")
        return loss

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """The last good checkpoint must stay last."""
        if not finite_weights(self.model):
            raise NonFiniteLoss(f"the weights became NaN/inf by step {self.state.global_step}; "
                                "that checkpoint was not written")
        super()._save_checkpoint(model, trial)


class RagtuneTrainer(NonFiniteGuard, WatchMixin, Trainer):
    """Trainer that counts real (non-padding) tokens and stops on a non-finite loss."""

    # compute_loss divides by the token count of the whole accumulated batch itself.
    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Make the Trainer count response tokens over the accumulated batch (num_items_in_batch).
        self.model_accepts_loss_kwargs = True
        self._tokens_local = 0
        self._tokens_base: int | None = None

    def _count_tokens(self, inputs: dict[str, Any]) -> None:
        n_tokens = inputs.pop("n_tokens", None)
        if n_tokens is None or not self.model.training:
            return
        if self._tokens_base is None:
            self._tokens_base = int(self.state.num_input_tokens_seen or 0)
        self._tokens_local += int(n_tokens)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the token count (summed over processes) to the state before logging."""
        if self._tokens_base is not None:
            local = torch.tensor([self._tokens_local], device=self.args.device)
            total = int(self.accelerator.gather(local).sum().item())
            self.state.num_input_tokens_seen = self._tokens_base + total
        super().log(logs, start_time)

    def _scale(self, loss_sum: torch.Tensor, count: int | torch.Tensor,
               num_items_in_batch: Any) -> torch.Tensor:
        """Mean over the accumulated batch (and all processes), like Trainer's GA fix."""
        if num_items_in_batch is None:
            return loss_sum / max(int(count), 1)
        loss = loss_sum / num_items_in_batch
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            loss = loss * self.args.world_size
        return loss


class SFTTrainer(RagtuneTrainer):
    """Cross-entropy on answer tokens only; logits are computed only where labels exist."""

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any],
                     return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        self._count_tokens(inputs)
        labels = inputs.pop("labels")
        targets = torch.full_like(labels, IGNORE)
        targets[:, :-1] = labels[:, 1:]
        keep = targets.ne(IGNORE)  # positions whose next token is an answer token
        outputs = model(**inputs, logits_to_keep=keep, use_cache=False)
        logits = outputs.logits.reshape(-1, outputs.logits.shape[-1])
        loss_sum = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
        loss = self._scale(loss_sum, keep.sum(), num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model: torch.nn.Module, inputs: dict[str, Any],
                        prediction_loss_only: bool, ignore_keys: list[str] | None = None) -> Any:
        """Validation loss only (token-weighted mean over the batch)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, dict(inputs), num_items_in_batch=None)
        return loss.detach(), None, None


def finite_weights(model: torch.nn.Module) -> bool:
    """True when every trainable parameter is finite (checked before each checkpoint)."""
    return all(torch.isfinite(p).all() for p in model.parameters() if p.requires_grad)


def finite_grads(model: torch.nn.Module) -> bool:
    """True when every trainable parameter's gradient is finite (cheap for LoRA)."""
    for param in model.parameters():
        if param.requires_grad and param.grad is not None:
            if not torch.isfinite(param.grad).all():
                return False
    return True


def is_finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True
