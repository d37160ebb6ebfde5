"""Merge a run's LoRA adapter into its base weights and export a plain HF model directory."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from finetune.runs import RunPaths
from ragtune.errors import ConfigError, ModelNotFoundError, NotFoundError

log = logging.getLogger(__name__)


def base_location(paths: RunPaths) -> str:
    """The base model a run trained on: run_config.yaml's resolved location, else the adapter's."""
    import yaml

    if paths.run_config.is_file():
        cfg = yaml.safe_load(paths.run_config.read_text(encoding="utf-8")) or {}
        location = (cfg.get("resolved") or {}).get("model_location")
        if location:
            return str(location)
    adapter_cfg = json.loads((paths.adapter / "adapter_config.json").read_text(encoding="utf-8"))
    location = adapter_cfg.get("base_model_name_or_path")
    if not location:
        raise ModelNotFoundError(f"cannot tell which base model run {paths.name!r} used; "
                                 "pass --base")
    return str(location)


def refuse_quantized(location: str) -> None:
    """Merging LoRA deltas into 4/8-bit (or GPTQ/AWQ/GGUF) weights would re-quantize them."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(location)
    quant = getattr(config, "quantization_config", None)
    if quant:
        method = quant.get("quant_method", "?") if isinstance(quant, dict) else \
            getattr(quant, "quant_method", "?")
        raise ConfigError("base", location, f"the base model is quantized ({method}); merging a "
                          "LoRA adapter into quantized weights rounds the update away or fails. "
                          "Merge into the unquantized original model (--base DIR_OR_ID), or "
                          "serve the adapter unmerged")


def merge_run(name: str, workspace: Path | None = None, output: Path | None = None,
              base: str | None = None) -> Path:
    """Write `<workspace>/models/<name>-merged/` (atomically: temp dir, then rename)."""
    from ragtune.settings import load_settings

    ws = load_settings(workspace=workspace).paths
    paths = RunPaths(ws.runs_dir / name)
    if not (paths.adapter / "adapter_config.json").is_file():
        hint = " (it has not finished yet)" if paths.root.is_dir() else ""
        raise NotFoundError(f"run {name!r} has no adapter in {paths.adapter}{hint}; "
                            "see `ragtune runs`")
    location = base or base_location(paths)
    if Path(location).is_absolute() and not Path(location).is_dir():
        raise ModelNotFoundError(f"base model {location!r} of run {name!r} is gone; pass --base")
    refuse_quantized(location)
    out = Path(output) if output else ws.models_dir / f"{name}-merged"
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_merged(location, paths.adapter, tmp)
        (tmp / "ragtune_model.json").write_text(json.dumps(
            {"merged_from": {"base": location, "adapter": str(paths.adapter.resolve()),
                             "run": name}, "created": time.strftime("%Y-%m-%dT%H:%M:%S")},
            indent=2) + "\n", encoding="utf-8")
        for item in tmp.iterdir():  # safetensors writes 0600; servers may run as another user
            item.chmod(0o644)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_merged(location: str, adapter: Path, out: Path) -> None:
    """Base + adapter -> merged weights (base dtype), tokenizer with its chat template."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(location, dtype="auto")
    model = PeftModel.from_pretrained(model, str(adapter))
    merged = model.merge_and_unload(safe_merge=True)
    merged.config.use_cache = True
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(location)
    tokenizer.save_pretrained(out)
    if not (out / "generation_config.json").is_file():
        merged.generation_config.save_pretrained(out)
