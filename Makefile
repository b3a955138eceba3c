# Quick start: `make demo` (main job on the embedded default) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RESULTS ?= results/demo
BACKBONES := mlp vgg-small resnet-cifar mobilenetv2 simplenet

BASELINE_TRACKS := accuracy complexity latency edge robustness training_cost

BINARIZATION_TRACKS := accuracy complexity edge-lce training_cost

.PHONY: setup demo test lint bench baselines binarization

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

demo: setup
	$(BIN)/effbench run --method $(BACKBONES) --task digits --track accuracy complexity \
		--budget quick --seed 0 --out $(RESULTS)
	$(BIN)/effbench table --out $(RESULTS)

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

# The committed baseline records: the reference backbones on both embedded tasks through every track.
baselines: setup
	$(BIN)/effbench run --method $(BACKBONES) --task digits mnist1d --track $(BASELINE_TRACKS) \
		--budget quick --seed 0 --out results/baselines
	$(BIN)/effbench run --method mlp resnet-cifar --task digits mnist1d --track sensitivity \
		--budget quick --seed 0 --out results/baselines

# The committed binarization-suite records: every method of the suite (and its FP32 twin) on both embedded
# tasks, 3 seeds, plus the papers' CIFAR-10 reference values.
binarization: setup
	$(BIN)/effbench run --suite binarization --task digits mnist1d --track $(BINARIZATION_TRACKS) \
		--budget quick --seed 0 1 2 --out results/binarization
	$(BIN)/effbench paper-records suites/binarization/paper_results.yaml --out results/binarization
	$(BIN)/effbench table --suite binarization --out results/binarization --format markdown

bench: setup
	$(BIN)/python benchmarks/harness_overhead.py
