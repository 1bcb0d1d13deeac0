# IGR — every target installs what it needs first (`make setup`), so a fresh clone works.
# `make help` lists the targets.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Extra arguments appended to the igr command of every training / evaluation target: make train-coarse ARGS="--trainer.num_nodes 2"
ARGS ?=
# pip constraints for `make setup` (the versions the suite last passed with): make setup CONSTRAINTS=constraints.txt
CONSTRAINTS ?=

.DEFAULT_GOAL := help
.PHONY: help setup constraints test test-all lint format info info-sd15 demo demo-long train-coarse finetune eval \
        eval-guidance ablate download-weights app browser gpu-smoke gpu-bundle clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS),) -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install the package with dev tools (pip install -e .[dev])

constraints: $(STAMP) ## rewrite constraints.txt from this venv (after an upgrade that passed make test-all)
	@{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v -e '^igr==' -e '^# Editable'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

lint: $(STAMP) ## ruff check
	$(BIN)/ruff check igr tests

format: $(STAMP) ## ruff format + autofix
	$(BIN)/ruff check --fix igr tests
	$(BIN)/ruff format igr tests

# pytest-xdist workers: the suite's tests are single-threaded under xdist (tests/conftest.py), so 2 cores run 2.
TEST_WORKERS ?= 2
test: $(STAMP) lint ## the default test suite (fast tests, $(TEST_WORKERS) xdist workers)
	$(BIN)/pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

test-all: $(STAMP) lint ## every test, the slow ones included
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

info: $(STAMP) ## parameter counts of the tiny model
	$(BIN)/igr info -c configs/model/tiny.yaml

info-sd15: $(STAMP) ## parameter counts of the paper's SD1.5-size model (meta device, no weights)
	$(BIN)/igr info -c configs/model/sd15.yaml

download-weights: $(STAMP) ## fetch SD1.5, IP-Adapter, ViT-H-14 and metric weights into weights/ (needs a network)
	$(BIN)/igr download-weights --to weights

demo: $(STAMP) ## synthetic data → coarse → HQFT fine-tune → eval → outputs/demo/report.md + docs/demo-samples.png (≤15 min)
	$(BIN)/igr demo --profile default --figure docs/demo-samples.png

APP_MODEL ?= outputs/demo/pipeline
APP_PORT ?= 7860
app: $(STAMP) ## the restoration web app on http://127.0.0.1:$(APP_PORT) for APP_MODEL=$(APP_MODEL) (after make demo)
	$(BIN)/igr serve --model $(APP_MODEL) --port $(APP_PORT)

browser: ## headless Chromium + chromedriver from Debian for the app's browser test (skipped when present)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then echo "chromium: $$(command -v chromium)"; \
	elif command -v apt-get >/dev/null; then apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "no apt-get: install chromium and chromedriver yourself for tests/test_app.py"; fi

demo-long: $(STAMP) ## the demo with a longer schedule (≤60 min on 2 cores) → outputs/demo-long/
	$(BIN)/igr demo --profile long --out outputs/demo-long --shards shards/demo-long

# --- the paper's runs (need weights from `make download-weights` and shards from `igr make-shards`) -------------
TRAINER ?= configs/trainer/deepspeed_4xa100.yaml
COARSE_CKPT ?= outputs/coarse/checkpoints/last.ckpt
MODEL ?= outputs/finetune/pipeline
PAIRED ?= shards/viton-hd/test.json
UNPAIRED ?= shards/streettryon/test.json
METRICS ?= configs/metrics/default.yaml
# Evaluation processes on this node (one per GPU; igr eval --devices): make eval DEVICES=4
DEVICES ?= 1

train-coarse: $(STAMP) ## coarse stage (paper §3.3) on configs/data/coarse.yaml's sets (VITON-HD + DressCode train); TRAINER= picks the hardware overlay
	$(BIN)/igr fit -c configs/experiment/coarse.yaml -c $(TRAINER) $(ARGS)

# Under DeepSpeed a checkpoint is a folder that only unpickling reads; these two are this machine's own
# `make train-coarse` / fine-tune outputs, so the target trusts them explicitly (never pass it for a download).
OWN_CKPT_TRUST ?= $(if $(findstring deepspeed,$(TRAINER)),--trust-pickle,)
finetune: $(STAMP) ## HQFT fine-tune from $(COARSE_CKPT) on shards/hqft, then export $(MODEL)
	$(BIN)/igr fit -c configs/experiment/finetune.yaml -c $(TRAINER) --model.init_from=$(COARSE_CKPT) $(OWN_CKPT_TRUST) $(ARGS)
	$(BIN)/igr export outputs/finetune/checkpoints/last.ckpt --out $(MODEL) $(OWN_CKPT_TRUST)

eval: $(STAMP) ## Table 1 layout: paired $(PAIRED) + unpaired $(UNPAIRED) for MODEL=$(MODEL) on DEVICES=$(DEVICES)
	$(BIN)/igr eval --model $(MODEL) --name "IGR (ours)" --shards $(PAIRED) --unpaired-shards $(UNPAIRED) \
		--real $(PAIRED) -c $(METRICS) --out outputs/eval --overwrite --devices $(DEVICES) $(ARGS)

eval-guidance: $(STAMP) ## Table 3: guidance sweep 1.0/1.5/2.0/2.5 in one run (real-set features reused)
	$(BIN)/igr eval --model $(MODEL) --name "IGR" --guidance 1.0,1.5,2.0,2.5 --shards $(PAIRED) \
		--unpaired-shards $(UNPAIRED) --real $(PAIRED) -c $(METRICS) --out outputs/eval-guidance --overwrite \
		--devices $(DEVICES) $(ARGS)

ablate: $(STAMP) ## Table 2: w/o GarmNet, w/o HQFT, full (pipelines from the three runs; see README)
	$(BIN)/igr eval --model outputs/ablate-no-garmnet/pipeline --name "w/o GarmNet" \
		--model outputs/coarse/pipeline --name "w/o HQFT" --model $(MODEL) --name "Ours" \
		--shards $(PAIRED) --unpaired-shards $(UNPAIRED) --real $(PAIRED) -c $(METRICS) --out outputs/ablate --overwrite \
		--devices $(DEVICES) $(ARGS)

gpu-smoke: ## one GPU, <= 8 min, no downloads: train-coarse's path (DeepSpeed, DataModule, sd15 random init) + resume, export, restore, eval -> outputs/gpu-smoke/<card>.json
	PYTHON=$(if $(wildcard $(BIN)/python),$(BIN)/python,python3) bash scripts/gpu-smoke.sh --out outputs/gpu-smoke $(ARGS)

gpu-bundle: $(STAMP) ## where the package index is reachable: the wheels a bare GPU machine's torch lacks -> .whl/ (<= 60 MiB)
	PYTHON=$(BIN)/python bash scripts/gpu-bundle.sh

clean: ## remove generated shards and outputs (keeps .venv)
	rm -rf shards outputs lightning_logs
