"""LoRA training for one `FinetuneConfig`: data checks, model set-up, Trainer, outputs.

Order matters: the config and the datasets are checked before any model is loaded, so a bad
row or field fails in a second, not after a minute of loading weights.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.config import RESUME_KEYS, FinetuneConfig
from finetune.data import StageData, build_sft, shortening
from finetune.packing import attention_implementation
from finetune.preference import build_preference
from finetune.watch import RANK_METRIC, DegenerationWatch, keep_best
from finetune.runs import (RunPaths, checkpoint_step, install_adapter, last_checkpoint,
                           read_status, update_status)
from ragtune.errors import ConfigError, DatasetError, ModelNotFoundError, TrainingError

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a call to `train` did."""

    paths: RunPaths
    status: str  # finished | already-finished
    step: int = 0
    resumed_from: str | None = None
    warning: str | None = None


# ------------------------------------------------------------------ workspace and run state

def workspace_of(cfg: FinetuneConfig) -> Any:
    from ragtune.settings import load_settings

    return load_settings(workspace=cfg.workspace).paths


def run_paths(cfg: FinetuneConfig) -> RunPaths:
    return RunPaths(workspace_of(cfg).runs_dir / cfg.name)


def world() -> tuple[int, int]:
    """(rank, world size) from the torchrun environment."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def check_run_state(cfg: FinetuneConfig, paths: RunPaths) -> str:
    """"new", "resume" or "finished"; handles --overwrite and refuses a live duplicate."""
    from finetune.runs import effective_status

    status = read_status(paths)
    if status is None and not paths.root.exists():
        return "new"
    state = effective_status(status)
    if state == "running" and int(status.get("pid", -1)) != os.getpid():
        raise TrainingError(f"run {cfg.name!r} is already running (pid {status['pid']}); follow "
                            f"it with `ragtune runs tail {cfg.name}` or pick another --name")
    if cfg.overwrite:
        log.warning("--overwrite: deleting %s", paths.root)
        shutil.rmtree(paths.root)
        return "new"
    if state == "finished" and (paths.adapter / "adapter_config.json").is_file():
        return "finished"
    check_resume_compatible(cfg, paths)
    return "resume" if last_checkpoint(paths.checkpoints) else "new"


def check_resume_compatible(cfg: FinetuneConfig, paths: RunPaths) -> None:
    """Refuse to resume a run whose data/model/LoRA settings differ from this config."""
    import yaml

    if not paths.run_config.is_file():
        return
    old = (yaml.safe_load(paths.run_config.read_text(encoding="utf-8")) or {})
    changed = [k for k in RESUME_KEYS
               if k in old and _norm(k, old[k]) != _norm(k, getattr(cfg, k))]
    if changed:
        diffs = ", ".join(f"{k}: {old[k]!r} -> {getattr(cfg, k)!r}" for k in changed)
        raise ConfigError(changed[0], getattr(cfg, changed[0]),
                          f"run {cfg.name!r} exists with different settings ({diffs}); resume it "
                          "with the same settings, retrain with --overwrite, or use another --name")


def _norm(key: str, value: Any) -> Any:
    """Compare settings as resolved: a relative and an absolute path to one file are equal."""
    if key in ("dataset", "eval_dataset", "model", "adapter") and value:
        parts = [p.strip() for p in str(value).split(",")]
        return ",".join(str(Path(p).resolve()) if Path(p).exists() else p for p in parts)
    return str(value) if isinstance(value, Path) else value


# ------------------------------------------------------------------ data

def load_examples(cfg: FinetuneConfig, ws: Any) -> tuple[list[Any], list[Any]]:
    """Training and validation examples (validation: eval_dataset or a seeded val_ratio split)."""
    from ragtune.datasets import load_datasets

    dataset_dir = cfg.dataset_dir or ws.datasets_dir
    train = load_datasets(cfg.dataset, dataset_dir)
    check_kind(cfg, train, "dataset")
    if cfg.max_samples is not None:
        train = train[: cfg.max_samples]
    if cfg.eval_dataset:
        evals = load_datasets(cfg.eval_dataset, dataset_dir)
        check_kind(cfg, evals, "eval_dataset")
        return train, evals[: cfg.max_eval_samples]
    n_val = int(round(len(train) * cfg.val_ratio)) if cfg.val_ratio > 0 else 0
    if cfg.val_ratio > 0 and len(train) >= 8:
        n_val = max(1, n_val)
    if n_val == 0:
        return train, []
    order = list(range(len(train)))
    random.Random(cfg.seed).shuffle(order)
    val_idx = set(order[:n_val])
    evals = [ex for i, ex in enumerate(train) if i in val_idx]
    return [ex for i, ex in enumerate(train) if i not in val_idx], evals[: cfg.max_eval_samples]


def check_kind(cfg: FinetuneConfig, examples: list[Any], fld: str) -> None:
    """The dataset rows must suit the stage (SFT pairs, chosen/rejected, or KTO labels)."""
    kind = type(examples[0]).__name__
    wanted = {"sft": ("SFTExample",), "dpo": ("PreferenceExample",),
              "kto": ("KTOExample", "PreferenceExample")}[cfg.stage]
    if kind not in wanted:
        what = {"SFTExample": "instruction/answer (SFT)", "PreferenceExample":
                "chosen/rejected (preference)", "KTOExample": "labelled (KTO)"}[kind]
        raise ConfigError(fld, getattr(cfg, fld),
                          f"holds {what} rows, but --stage {cfg.stage} needs "
                          f"{' or '.join(wanted)} rows")


# ------------------------------------------------------------------ model

def compute_dtype(cfg: FinetuneConfig) -> str:
    """fp32 on CPU; bf16 where the GPU supports it, else fp16 (when compute_type is auto)."""
    import torch

    if cfg.compute_type == "fp16" and not torch.cuda.is_available():
        raise ConfigError("compute_type", "fp16", "fp16 mixed precision needs a CUDA GPU; use "
                          "fp32 (or bf16) on a CPU")
    if cfg.compute_type != "auto":
        return cfg.compute_type
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def resolve_adapter(cfg: FinetuneConfig, ws: Any) -> Path | None:
    """The adapter to start from: a directory, a run dir, or a run name in this workspace."""
    if not cfg.adapter:
        return None
    for candidate in (Path(cfg.adapter).expanduser(), Path(cfg.adapter).expanduser() / "adapter",
                      ws.runs_dir / cfg.adapter / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return candidate.resolve()
    raise ModelNotFoundError(f"adapter {cfg.adapter!r} not found: give a finished run name "
                             f"(see `ragtune runs`) or a directory with adapter_config.json")


def check_adapter_base(adapter: Path, location: str) -> None:
    """Warn when the starting adapter was trained on another base model than this run's."""
    import json

    trained_on = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get(
        "base_model_name_or_path") or ""
    same = trained_on == location or (Path(trained_on).is_dir() and Path(location).is_dir()
                                      and Path(trained_on).resolve() == Path(location).resolve())
    if trained_on and not same:
        log.warning("adapter %s was trained on %s, this run's base model is %s", adapter,
                    trained_on, location)


def load_model(location: str, dtype: str, cfg: FinetuneConfig, adapter: Path | None) -> Any:
    """The base model with a trainable LoRA adapter (fresh, or loaded from `adapter`)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    kwargs = {"attn_implementation": attention_implementation()} if cfg.packing \
        and cfg.stage == "sft" else {}
    model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype, **kwargs)
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if adapter is not None:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    targets = cfg.lora_target.strip()
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules="all-linear" if targets == "all-linear"
                      else [t.strip() for t in targets.split(",") if t.strip()],
                      task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora)
    except ValueError as err:
        raise ConfigError("lora_target", cfg.lora_target, str(err)) from None


def load_tokenizer(location: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ------------------------------------------------------------------ datasets for the Trainer

def build_data(cfg: FinetuneConfig, tokenizer: Any, train: list[Any], evals: list[Any]
               ) -> StageData:
    if cfg.stage == "sft":
        return build_sft(cfg, tokenizer, train, evals)
    return build_preference(cfg, tokenizer, train, evals)


# ------------------------------------------------------------------ Trainer set-up

def training_args(cfg: FinetuneConfig, paths: RunPaths, dtype: str, has_eval: bool,
                  resuming: bool = False, args_cls: Any = None, **extra: Any) -> Any:
    """TrainingArguments (or the stage's subclass, e.g. TRL's DPOConfig, with its `extra`
    fields) from the config; checkpoints go under runs/<name>/checkpoints."""
    import torch
    from transformers import TrainingArguments

    args_cls = args_cls or TrainingArguments
    cuda = torch.cuda.is_available()
    _, world_size = world()
    eval_every = has_eval and cfg.eval_steps > 0
    if has_eval and cfg.degeneration_samples:  # rank checkpoints by the degeneration watch
        extra = {"metric_for_best_model": RANK_METRIC, "greater_is_better": False, **extra}
    return args_cls(
        output_dir=str(paths.checkpoints),
        per_device_train_batch_size=cfg.per_device_batch_size,
        per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps, max_grad_norm=cfg.max_grad_norm, weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_ratio,
        logging_steps=cfg.logging_steps, logging_first_step=True,
        eval_strategy="steps" if eval_every else "no",
        eval_steps=cfg.eval_steps if eval_every else None,
        eval_on_start=has_eval and cfg.eval_on_start and not resuming,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        seed=cfg.seed, data_seed=cfg.seed,
        bf16=dtype == "bf16", fp16=dtype == "fp16", use_cpu=not cuda,
        report_to="none", disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0, dataloader_pin_memory=cuda,
        ddp_backend=None if cuda or world_size == 1 else "gloo",
        ddp_find_unused_parameters=False if world_size > 1 else None,
        deepspeed=str(cfg.deepspeed) if cfg.deepspeed else None,
        **extra,
    )


def make_trainer(cfg: FinetuneConfig, paths: RunPaths, model: Any, data: StageData, dtype: str,
                 extra_callbacks: tuple = (), resuming: bool = False) -> tuple[Any, Any]:
    """The Trainer with ragtune's callbacks in place of the default printer/progress bar."""
    import math

    from transformers.trainer_callback import PrinterCallback, ProgressCallback as HFProgress

    from finetune.callbacks import (LossTrendCallback, NanGuardCallback, ProgressCallback,
                                    RunLogCallback)

    args = training_args(cfg, paths, dtype, data.eval is not None, resuming, data.args_cls,
                         **data.args_kwargs)
    _, world_size = world()
    per_step = cfg.per_device_batch_size * cfg.gradient_accumulation_steps * world_size
    trend = LossTrendCallback(math.ceil(len(data.train) / per_step))
    callbacks = [RunLogCallback(paths), ProgressCallback(cfg.progress), NanGuardCallback(), trend,
                 *extra_callbacks]
    trainer = data.trainer_cls(model=model, args=args, train_dataset=data.train,
                               eval_dataset=data.eval, data_collator=data.collator,
                               callbacks=callbacks, **data.trainer_kwargs)
    for cb in (PrinterCallback, HFProgress):
        trainer.remove_callback(cb)
    if data.eval is not None and data.watch_prompts:
        trainer.watch = DegenerationWatch(data.tokenizer, data.watch_prompts,
                                          cfg.degeneration_max_new_tokens)
    return trainer, trend


def save_adapter(trainer: Any, paths: RunPaths) -> None:
    """Write adapter_config.json + adapter_model.safetensors only, replacing atomically."""
    rank, _ = world()
    tmp = paths.root / ".adapter.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    if rank == 0:
        install_adapter(paths, tmp)


def rewind_log(paths: RunPaths, step: int) -> None:
    """Drop log records after the checkpoint we resume from: those steps are trained again."""
    import json

    from finetune.runs import read_log

    records = read_log(paths.trainer_log)
    kept = [r for r in records if int(r.get("step", 0)) <= step]
    if len(kept) != len(records):
        tmp = paths.trainer_log.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        tmp.replace(paths.trainer_log)


def write_run_config(cfg: FinetuneConfig, paths: RunPaths, resolved: dict[str, Any]) -> None:
    """run_config.yaml: the config fields (loadable with --config) plus a `resolved` block."""
    import yaml

    data = cfg.to_dict()
    for key in ("detach", "overwrite"):
        data[key] = False
    data["resolved"] = resolved
    tmp = paths.run_config.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(paths.run_config)


def resolved_block(cfg: FinetuneConfig, ws: Any, base: Any, adapter: Path | None, dtype: str,
                   data: StageData) -> dict[str, Any]:
    import torch
    import transformers

    stats = data.stats
    return {
        "workspace": str(ws.root.resolve()), "run_dir": str((ws.runs_dir / cfg.name).resolve()),
        "model_location": base.location, "model_how": base.how,
        "dataset_dir": str((cfg.dataset_dir or ws.datasets_dir).resolve()),
        "start_adapter": str(adapter) if adapter else None, "compute_type": dtype,
        "device": "cuda" if torch.cuda.is_available() else "cpu", "world_size": world()[1],
        "think_prefix": bool(data.think),
        "data": {"examples": stats.examples, "kept": stats.kept, "truncated": stats.truncated,
                 "dropped": stats.dropped, "shortened": stats.shortened,
                 "passages_dropped": stats.passages_dropped, "tokens": stats.tokens,
                 "response_tokens": stats.response_tokens, **stats.extra},
        "versions": {"torch": str(torch.__version__), "transformers": str(transformers.__version__)},
    }


# ------------------------------------------------------------------ the run

def train(cfg: FinetuneConfig, callbacks: tuple = (), *, prechecked: bool = False) -> TrainResult:
    """Train (or resume) the run named `cfg.name`; returns when it is finished."""
    from ragtune.logs import setup_logging
    from ragtune.models import resolve_generator

    ws = workspace_of(cfg)
    paths = RunPaths(ws.runs_dir / cfg.name)
    rank, _ = world()
    state = "new" if prechecked else check_run_state(cfg, paths)
    if prechecked and last_checkpoint(paths.checkpoints):
        state = "resume"
    if state == "finished":
        status = read_status(paths) or {}
        return TrainResult(paths, "already-finished", int(status.get("step", 0)))
    train_ex, eval_ex = load_examples(cfg, ws)  # fails on a bad row before any model loads
    adapter = resolve_adapter(cfg, ws)
    base = resolve_generator(cfg.model, ws.models_dir)
    if adapter is not None:
        check_adapter_base(adapter, base.location)
    paths.root.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        log_file = setup_logging(paths.root, "train")
        update_status(paths, name=cfg.name, stage=cfg.stage, status="running", pid=os.getpid(),
                      started=time.strftime("%Y-%m-%dT%H:%M:%S"), log=str(log_file), message=None)
        print(f"run {cfg.name!r} ({cfg.stage}, {base.location}) -> {paths.root}\n  log: {log_file}",
              file=sys.stderr, flush=True)
    try:
        return _train(cfg, paths, ws, base, adapter, train_ex, eval_ex, callbacks)
    except BaseException as err:
        if rank == 0:
            stopped = isinstance(err, KeyboardInterrupt)
            ckpt = last_checkpoint(paths.checkpoints)
            keep = f"; last good checkpoint: {ckpt.name}" if ckpt else ""
            update_status(paths, status="stopped" if stopped else "failed",
                          message=f"{type(err).__name__}: {err}{keep}")
            log.error("run %s %s: %s%s", cfg.name, "stopped" if stopped else "failed", err, keep)
        raise


def _train(cfg: FinetuneConfig, paths: RunPaths, ws: Any, base: Any, adapter: Path | None,
           train_ex: list[Any], eval_ex: list[Any], callbacks: tuple) -> TrainResult:
    import warnings

    from transformers import set_seed

    from finetune.trainer import NonFiniteLoss

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    rank, _ = world()
    tokenizer = load_tokenizer(base.location)
    data = build_data(cfg, tokenizer, train_ex, eval_ex)
    shortened = shortening(data.stats, cfg.cutoff_len)
    if rank == 0:
        update_status(paths, shortened=shortened)
    dtype = compute_dtype(cfg)
    set_seed(cfg.seed)  # LoRA init is random: same seed, same start
    model = load_model(base.location, dtype, cfg, adapter)
    resume = last_checkpoint(paths.checkpoints, remove_partial=rank == 0)
    trainer, trend = make_trainer(cfg, paths, model, data, dtype, callbacks, resume is not None)
    if rank == 0:
        write_run_config(cfg, paths, resolved_block(cfg, ws, base, adapter, dtype, data))
    if resume is not None:
        log.warning("resuming run %s from %s", cfg.name, resume.name)
    if rank == 0:  # records after the checkpoint (all of them when starting over) are redone
        rewind_log(paths, checkpoint_step(resume) if resume is not None else -1)
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except NonFiniteLoss as err:
        ckpt = last_checkpoint(paths.checkpoints)
        where = f"the last good checkpoint is kept: {ckpt}" if ckpt else "no checkpoint was saved"
        raise NonFiniteLoss(f"{err}; {where}. Lower --learning_rate (now {cfg.learning_rate:g}) "
                            "and retrain with --overwrite, or check the data") from None
    step = trainer.state.global_step
    if data.eval is not None and not (cfg.eval_steps > 0 and step % cfg.eval_steps == 0):
        trainer.evaluate()  # the validation loss at the final step (unless just measured)
    save_adapter(trainer, paths)
    warning = trend.warning
    if rank == 0:
        from finetune.runs import plot_loss, read_log

        watched = {}
        if trainer.watch is not None:
            watched = keep_best(paths, len(trainer.watch.prompts), step, adapter)
            if watched["degenerated_at"] is not None:
                warning = "; ".join(w for w in (degenerate_warning(watched), warning) if w)
        plot_loss(read_log(paths.trainer_log), paths.loss_png, f"{cfg.name} ({cfg.stage})")
        update_status(paths, status="finished", step=trainer.state.global_step,
                      max_steps=trainer.state.max_steps, message=warning, **watched)
    return TrainResult(paths, "finished", trainer.state.global_step,
                       resume.name if resume else None, warning)


def degenerate_warning(watched: dict[str, Any]) -> str:
    kept = {"start": "the starting adapter (--adapter)", "final": "the final weights"}.get(
        watched["kept_checkpoint"], watched["kept_checkpoint"])
    where = (f"the adapter is {kept} (fewest degenerate answers, then lowest validation loss)"
             if kept else "no earlier checkpoint to fall back to: the adapter is the final one")
    return (f"DEGENERATE ANSWERS: more than half of the {watched['degenerate_samples']} "
            f"validation answers became loops, citation markers only or empty at step "
            f"{watched['degenerated_at']}; {where}. Lower --learning_rate or train fewer steps")
