"""`FinetuneConfig`: every knob of `finetune run`, LLaMA-Factory's names where they exist.

The dataclass is the single source of truth: the CLI turns each field into a `--FIELD` flag,
shipped YAMLs under `configs/finetune/` mirror it, and the resolved copy is written into every
run directory as `run_config.yaml`. Validation happens in `__post_init__`, before any dataset
or model is touched, and names the bad field and value.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ragtune.errors import ConfigError

Stage = Literal["sft", "dpo", "kto"]
ComputeType = Literal["auto", "fp32", "fp16", "bf16"]
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
              "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau",
              "cosine_with_min_lr", "warmup_stable_decay")
# Same rule as the serving side's model names: a run name becomes an OpenAI model name.
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,99}$")
RESERVED_NAMES = {"base"}
# Fields whose change makes an existing checkpoint meaningless to resume from.
RESUME_KEYS = ("stage", "model", "dataset", "eval_dataset", "val_ratio", "max_samples",
               "cutoff_len", "packing", "per_device_batch_size", "gradient_accumulation_steps",
               "lora_rank", "lora_alpha", "lora_target", "seed", "adapter", "nproc")


@dataclass
class FinetuneConfig:
    """Fine-tune a chat model with LoRA (SFT, DPO or KTO) into <workspace>/runs/<name>/.

    Starting the same command again resumes a killed run from its last checkpoint; a finished
    run says so (--overwrite retrains it). --detach runs in the background (follow it with
    `ragtune runs tail NAME`); --nproc N trains with N data-parallel processes (torchrun).
    Shipped configs: configs/finetune/*.yaml.
    """

    name: str = "ragtune-lora"  # run name: output goes to <workspace>/runs/<name>/
    stage: Stage = "sft"  # sft | dpo | kto
    model: str = "auto"  # "auto", "embedded:smollm2-135m", a local dir or a Hugging Face id
    dataset: str = "ragtune_sft"  # comma-separated names in dataset_info.json, or .json/.jsonl paths
    dataset_dir: Path | None = None  # folder with dataset_info.json (default: <workspace>/datasets)
    eval_dataset: str | None = None  # validation data; default: val_ratio of `dataset`
    val_ratio: float = 0.05  # fraction held out for validation loss when no eval_dataset (0: none)
    max_samples: int | None = None  # use at most this many training examples
    max_eval_samples: int | None = None  # use at most this many validation examples
    cutoff_len: int = 1024  # max tokens per example (and per packed row)
    packing: bool = True  # pack several examples per row (attention never crosses examples)
    learning_rate: float = 2e-4
    num_train_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    per_device_batch_size: int = 2  # rows per device per micro-step
    gradient_accumulation_steps: int = 4
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    compute_type: ComputeType = "auto"  # auto: bf16 on GPUs that support it, fp16 on older, fp32 on CPU
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target: str = "all-linear"  # "all-linear" or comma-separated module names (q_proj,v_proj)
    gradient_checkpointing: bool = False  # trade compute for memory (long cutoff_len on a GPU)
    logging_steps: int = 5
    eval_steps: int = 50  # validation loss every N steps (0: only at the end)
    eval_on_start: bool = True  # validation loss before the first step too (the curve's baseline)
    save_steps: int = 50  # checkpoint every N steps
    save_total_limit: int = 2  # keep the last K checkpoints
    seed: int = 42
    adapter: str | None = None  # start from this adapter (run name or dir); for dpo/kto: the SFT run
    pref_beta: float = 0.1  # DPO/KTO beta (strength of the pull towards the reference)
    degeneration_samples: int = 4  # greedy validation answers checked for loops per eval (0: off)
    degeneration_max_new_tokens: int = 32  # token budget of each of those answers
    nproc: int = 1  # processes for data-parallel training (torchrun; gloo on CPU, NCCL on GPU)
    deepspeed: Path | None = None  # DeepSpeed config (e.g. configs/deepspeed/zero2.json), GPUs only
    workspace: Path | None = None  # default: the RAGTUNE_WORKSPACE setting (./workspace)
    detach: bool = False  # run in the background; follow with `ragtune runs tail NAME`
    overwrite: bool = False  # retrain a finished (or failed) run from scratch
    progress: bool = True  # show a progress bar when attached to a terminal

    def __post_init__(self) -> None:
        self._coerce()
        self._check_names()
        self._check_numbers()
        self._check_choices()

    def _coerce(self) -> None:
        """YAML/CLI friendliness: lists become comma-separated strings, str paths become Paths."""
        for key in ("dataset", "eval_dataset"):
            value = getattr(self, key)
            if isinstance(value, list | tuple):
                setattr(self, key, ",".join(str(v) for v in value))
        for key in ("dataset_dir", "deepspeed", "workspace"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, Path):
                setattr(self, key, Path(str(value)))
        if isinstance(self.lora_target, list | tuple):
            self.lora_target = ",".join(self.lora_target)

    def _check_names(self) -> None:
        if not isinstance(self.name, str) or not RUN_NAME.match(self.name):
            raise ConfigError("name", self.name, "use letters, digits, '.', '_' or '-' (max 100), "
                              "starting with a letter or digit; it becomes a model name")
        if self.name in RESERVED_NAMES:
            raise ConfigError("name", self.name, "reserved for the base model; pick another name")
        if not str(self.model).strip():
            raise ConfigError("model", self.model, "must name a model (or 'auto')")
        if not str(self.dataset).strip():
            raise ConfigError("dataset", self.dataset, "must name at least one dataset")
        targets = [t.strip() for t in self.lora_target.split(",") if t.strip()]
        if not targets or any(not re.match(r"^[A-Za-z0-9_.\-]+$", t) for t in targets):
            raise ConfigError("lora_target", self.lora_target,
                              "use 'all-linear' or comma-separated module names like q_proj,v_proj")
        if self.adapter is not None and not str(self.adapter).strip():
            raise ConfigError("adapter", self.adapter, "must be a run name or an adapter directory")

    def _check_numbers(self) -> None:
        positive = {"learning_rate": self.learning_rate, "cutoff_len": self.cutoff_len,
                    "per_device_batch_size": self.per_device_batch_size,
                    "gradient_accumulation_steps": self.gradient_accumulation_steps,
                    "lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha,
                    "logging_steps": self.logging_steps, "save_steps": self.save_steps,
                    "save_total_limit": self.save_total_limit, "nproc": self.nproc,
                    "pref_beta": self.pref_beta, "max_grad_norm": self.max_grad_norm}
        for key, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value <= 0:
                raise ConfigError(key, value, "must be a positive number")
        if self.learning_rate >= 1:
            raise ConfigError("learning_rate", self.learning_rate,
                              "far too large for LoRA (typical: 5e-5 to 1e-3)")
        if self.cutoff_len < 16:
            raise ConfigError("cutoff_len", self.cutoff_len, "must be at least 16 tokens")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError("max_steps", self.max_steps, "use a positive step count, or -1 to "
                              "train for num_train_epochs")
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            raise ConfigError("num_train_epochs", self.num_train_epochs,
                              "must be positive when max_steps is -1")
        bounded = {"val_ratio": (self.val_ratio, 0.0, 0.5), "warmup_ratio": (self.warmup_ratio, 0.0, 0.5),
                   "lora_dropout": (self.lora_dropout, 0.0, 0.9),
                   "weight_decay": (self.weight_decay, 0.0, 1.0)}
        for key, (value, low, high) in bounded.items():
            if not isinstance(value, int | float) or not low <= value <= high:
                raise ConfigError(key, value, f"must be between {low} and {high}")
        for key in ("max_samples", "max_eval_samples"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigError(key, value, "must be a whole number of at least 1 (or unset)")
        if self.eval_steps < 0:
            raise ConfigError("eval_steps", self.eval_steps, "must be >= 0 (0: evaluate at the end)")
        for key, high in (("degeneration_samples", 64), ("degeneration_max_new_tokens", 512)):
            value = getattr(self, key)
            low = 0 if key == "degeneration_samples" else 1
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(key, value, f"must be a whole number from {low} to {high}")
        if self.stage == "kto" and self.per_device_batch_size < 2:
            raise ConfigError("per_device_batch_size", self.per_device_batch_size,
                              "KTO estimates its KL term within a batch: use at least 2")
        if self.nproc > 64:
            raise ConfigError("nproc", self.nproc, "more than 64 processes on one machine")

    def _check_choices(self) -> None:
        if self.stage not in ("sft", "dpo", "kto"):
            raise ConfigError("stage", self.stage, "use sft, dpo or kto")
        if self.compute_type not in ("auto", "fp32", "fp16", "bf16"):
            raise ConfigError("compute_type", self.compute_type, "use auto, fp32, fp16 or bf16")
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ConfigError("lr_scheduler_type", self.lr_scheduler_type,
                              f"use one of {', '.join(SCHEDULERS)}")
        if self.deepspeed is not None and not self.deepspeed.is_file():
            raise ConfigError("deepspeed", str(self.deepspeed), "file not found")

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-safe dict (paths as strings)."""
        out = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> FinetuneConfig:
        """Build from a mapping; unknown keys are an error naming the key."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                close = [k for k in known if k.split("_")[0] == str(key).split("_")[0]]
                hint = f"; did you mean {', '.join(sorted(close))}?" if close else ""
                raise ConfigError(str(key), data[key], f"unknown field in {source}{hint}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> FinetuneConfig:
        """Read a YAML config file; `overrides` (non-None) win over the file."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError("config", str(path), "file not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError("config", str(path), f"invalid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError("config", str(path), "top level must be a mapping of field: value")
        data.pop("resolved", None)  # written into run_config.yaml by runs; informational
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes: Any) -> FinetuneConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class ResolvedRun:
    """What a config resolved to on this machine (written next to the config)."""

    workspace: str
    run_dir: str
    model_location: str
    model_how: str
    adapter_dir: str | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
