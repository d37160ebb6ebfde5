#!/usr/bin/env bash
# The outside-corpora table of the README: for each corpus (default: all three), fetch its documents
# from Debian (scripts/outside-corpora.sh), ingest them into a workspace of its own
# (workspace/outside/<name>/workspace: its own index, pairs and runs; nothing of ./workspace is
# touched), run the default CPU recipe (configs/finetune/smollm2-135m-lora.yaml) on the pairs
# ingest wrote, and eval base vs the tuned adapter on data/outside/<name>/qa.jsonl.
# The gate is not calibrated on these questions: a new corpus has no unanswerable questions to
# fit it on, so it runs at the uncalibrated default, as a new user's service would.
# A recipe variant: FINETUNE_ARGS="--learning_rate 2e-4" RUN=lr2e-4 scripts/outside-eval.sh
# About 15 minutes per corpus on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${RAGTUNE_BIN:-.venv/bin}
RUN=${RUN:-smollm2-135m-lora}
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(debian-faq debian-reference-zh fhs)
bash scripts/outside-corpora.sh workspace/outside
for name in "${names[@]}"; do
  qa=data/outside/$name/qa.jsonl
  [ -f "$qa" ] || { echo "outside-eval: no questions at $qa" >&2; exit 1; }
  ws=workspace/outside/$name/workspace
  echo "== $name: ingest, finetune ($RUN), eval (workspace $ws)"
  mkdir -p "$ws" workspace/models   # the converted embedded model is shared, not converted again
  [ -e "$ws/models" ] || ln -s "$(pwd)/workspace/models" "$ws/models"
  "$BIN/ingest" "workspace/outside/$name/docs" --workspace "$ws"
  # shellcheck disable=SC2086  # FINETUNE_ARGS is a list of flags
  "$BIN/finetune" run --config configs/finetune/smollm2-135m-lora.yaml --name "$RUN" \
    --dataset_dir "$ws/datasets" --workspace "$ws" --overwrite ${FINETUNE_ARGS:-}
  "$BIN/ragtune" eval --qa "$qa" --model "base,$RUN" --workspace "$ws" --modes hybrid
done
