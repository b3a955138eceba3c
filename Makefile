# Quick start: `make demo` (main job on the embedded default) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RESULTS ?= results/demo
BACKBONES := mlp vgg-small resnet-cifar mobilenetv2 simplenet

.PHONY: setup demo test lint bench

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

bench: setup
	$(BIN)/python benchmarks/harness_overhead.py
