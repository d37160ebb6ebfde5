"""Find the tuned LoRA adapters of a workspace: `runs/<name>/adapter/adapter_config.json`.

Adapter names come from this scan only; a request names a model, it is looked up in the
scanned list, and no request-supplied string ever becomes a path.
"""

from __future__ import annotations

import logging
from pathlib import Path

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


def adapter_from_path(path: Path) -> tuple[str, Path] | None:
    """`(name, adapter_dir)` when `path` is a run dir or an adapter dir (a `--model` value)."""
    path = path.expanduser()
    for candidate in (path, path / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            name = candidate.parent.name if candidate.name == "adapter" else candidate.name
            return name, candidate.resolve()
    return None
