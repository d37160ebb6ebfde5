"""`finetune run|merge` and `ragtune runs [tail]`: the fine-tuning commands.

Light at import time: torch, transformers and peft are imported inside the functions.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from finetune.config import FinetuneConfig
from ragtune.errors import NotFoundError


def run(cfg: FinetuneConfig) -> int:
    """Fine-tune a chat model with LoRA (SFT, DPO or KTO) into runs/<name>/.

    Every config field is a flag (`--max_steps 4 --name quick`) and `--config FILE.yaml` reads
    a shipped config (configs/finetune/). Starting the same command again resumes a killed
    run from its last checkpoint; a finished run says so (`--overwrite` retrains it).
    `--detach` runs in the background (follow with `ragtune runs tail NAME`); `--nproc N`
    trains with N data-parallel processes through torchrun.
    """
    from finetune.launch import launch

    return launch(cfg)


def _workspace(workspace: Path | None):
    from ragtune.settings import load_settings

    return load_settings(workspace=workspace).paths


def merge(name: str, workspace: Path | None = None, output: Path | None = None,
          base: str | None = None) -> int:
    """Merge a run's LoRA adapter into its base model: a plain Hugging Face model directory.

    Writes <workspace>/models/<name>-merged/ (or --output): safetensors weights, tokenizer,
    chat template and generation config, loadable by transformers without peft and servable
    by vLLM or Ollama. Merging into a quantized base is refused.

    Args:
        name: the run to merge (see `ragtune runs`).
        workspace: workspace directory (default: the RAGTUNE_WORKSPACE setting).
        output: where to write the model (default: <workspace>/models/<name>-merged).
        base: the unquantized base model (dir or HF id) when the run trained on a quantized one.
    """
    from finetune.merge import merge_run

    out = merge_run(name, workspace=workspace, output=output, base=base)
    print(f"merged run {name!r} into {out}\n"
          f"  transformers: AutoModelForCausalLM.from_pretrained({str(out)!r})\n"
          f"  vLLM:         vllm serve {out}\n"
          f"  Ollama:       FROM {out}  (in a Modelfile; `ollama create {name} -f Modelfile`)")
    return 0


def runs(json: bool = False, workspace: Path | None = None) -> int:
    """List fine-tuning runs: status, step, last loss, validation loss and tokens/s.

    Args:
        json: print the list as JSON.
        workspace: workspace directory (default: the RAGTUNE_WORKSPACE setting).
    """
    import json as jsonlib

    from finetune.runs import list_runs

    rows = list_runs(_workspace(workspace).runs_dir)
    if json:
        print(jsonlib.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no runs yet: start one with `finetune run --config configs/finetune/...`")
        return 0
    print(f"{'name':24} {'status':9} {'stage':5} {'step':>11} {'loss':>7} {'val':>7} {'tok/s':>7}")
    for r in rows:
        step = f"{r['step']}/{r['max_steps']}" if r.get("max_steps") else str(r["step"])
        print(f"{r['name'][:24]:24} {r['status']:9} {(r['stage'] or '-'):5} {step:>11} "
              f"{_num(r['loss']):>7} {_num(r['eval_loss']):>7} {_num(r['tokens_per_s'], 0):>7}")
    return 0


def _num(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def tail(name: str, workspace: Path | None = None, follow: bool = True, lines: int = 20) -> int:
    """Show a run's log; with --follow (default) keep printing until the run ends.

    Args:
        name: the run to show (see `ragtune runs`).
        workspace: workspace directory (default: the RAGTUNE_WORKSPACE setting).
        follow: keep printing new lines while the run is running.
        lines: how many of the last lines to show first.
    """
    from finetune.runs import RunPaths, effective_status, read_status

    paths = RunPaths(_workspace(workspace).runs_dir / name)
    if not paths.root.is_dir():
        raise NotFoundError(f"no run named {name!r} in {paths.root.parent}; see `ragtune runs`")
    current, offset = None, 0
    while True:
        logs = paths.logs() + ([paths.console_log] if paths.console_log.is_file() else [])
        newest = max(logs, key=lambda p: p.stat().st_mtime) if logs else None
        if newest is not None and newest != current:
            current = newest
            text = newest.read_text(encoding="utf-8", errors="replace")
            sys.stdout.write("".join(text.splitlines(keepends=True)[-lines:]))
            offset = len(text.encode("utf-8"))
        elif newest is not None:
            with newest.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
            sys.stdout.write(chunk.decode("utf-8", errors="replace"))
        sys.stdout.flush()
        status = read_status(paths)
        state = effective_status(status)
        if not follow or state != "running":
            break
        time.sleep(1.0)
    status = status or {}
    print(f"-- run {name}: {state}, step {status.get('step', '?')}/{status.get('max_steps', '?')}"
          + (f" ({status['message']})" if status.get("message") else ""))
    return 0 if state in ("finished", "running") else 1
