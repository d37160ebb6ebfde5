"""Find the tuned LoRA adapters of a workspace: `runs/<name>/adapter/adapter_config.json`.

Adapter names come from this scan only; a request names a model, it is looked up in the
scanned list, and no request-supplied string ever becomes a path.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from serving.config import MODEL_NAME

log = logging.getLogger(__name__)

RESERVED = {"base"}


def discover_adapters(runs_dir: Path) -> dict[str, Path]:
    """Map run name -> adapter directory for every run that holds a saved adapter."""
    found: dict[str, Path] = {}
    if not runs_dir.is_dir():
        return found
    for config in sorted(runs_dir.glob("*/adapter/adapter_config.json")):
        adapter_dir = config.parent
        name = adapter_dir.parent.name
        if name in RESERVED or not MODEL_NAME.match(name):
            log.warning("skipping adapter %s: run name %r cannot be a model name",
                        adapter_dir, name)
            continue
        if _unfinished(adapter_dir.parent):
            continue
        if not any(adapter_dir.glob("adapter_model.*")):
            log.warning("skipping adapter %s: no adapter_model weights (run unfinished?)",
                        adapter_dir)
            continue
        found[name] = adapter_dir
    return found


def _unfinished(run_dir: Path) -> bool:
    """True while the run's status.json says it is still writing (not finished/stopped)."""
    import json

    try:
        status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # a bare adapter folder (copied in by hand) counts as ready
    return status.get("status") in {"running", "starting"}


def mismatch(model: Any, adapter_dir: Path) -> str | None:
    """Why the adapter in `adapter_dir` does not fit `model` (it was trained on another base
    model: a module it adapts is missing or has another input size), or None when it fits.

    Checked from the safetensors header before peft touches the model: peft injects the LoRA
    layers first and fails on the weights afterwards, which leaves the served model changed.
    Adapters saved as .bin are left to peft.
    """
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        return None
    from safetensors import safe_open

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
            if ".lora_A." not in key:
                continue
            name = key.split(".lora_A.")[0].removeprefix("base_model.model.")
            try:
                module = base.get_submodule(name)
            except AttributeError:
                return f"the served model has no module {name}"
            inputs = getattr(module, "in_features", None)
            shape = f.get_slice(key).get_shape()
            if inputs is not None and len(shape) == 2 and shape[1] != inputs:
                return (f"{name} takes {inputs} inputs in the served model, {shape[1]} in the "
                        "adapter (trained on another base model)")
    return None


def adapter_from_path(path: Path) -> tuple[str, Path] | None:
    """`(name, adapter_dir)` when `path` is a run dir or an adapter dir (a `--model` value)."""
    path = path.expanduser()
    for candidate in (path, path / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            name = candidate.parent.name if candidate.name == "adapter" else candidate.name
            return name, candidate.resolve()
    return None
