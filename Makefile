# Quick start: `make demo` (main job on the embedded default) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RESULTS ?= results/demo
BACKBONES := mlp vgg-small resnet-cifar mobilenetv2 simplenet

BASELINE_TRACKS := accuracy complexity latency edge robustness training_cost

BINARIZATION_TRACKS := accuracy complexity edge-lce training_cost
QUANTIZATION_TRACKS := accuracy complexity edge fidelity training_cost
PRUNING_TRACKS := accuracy complexity edge training_cost
ARCHITECTURE_TRACKS := accuracy complexity latency edge training_cost
comma := ,

.PHONY: setup demo test lint bench baselines binarization quantization pruning architectures figures clean-tree system-packages

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

# Debian packages the tests use: chromium (the leaderboard's browser test) and bubblewrap (the sandbox that
# submitted code runs in). Installed when missing and apt-get can (root on Debian); elsewhere those tests skip.
SYSTEM_PACKAGES := chromium:chromium bwrap:bubblewrap

system-packages:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
		command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	elif [ -n "$$missing" ]; then \
		echo "make test: missing$$missing (apt-get install$$missing); their tests are skipped" >&2; \
	fi

# One test process per core, at most 4 (each imports TensorFlow: about 1 GB apiece); TEST_WORKERS=0 runs them
# in this process. Tests that run submitted code in the sandbox share one worker (their xdist_group), so two
# sandboxes never compete for the same user's process limit.
TEST_WORKERS ?= $(shell cores=$$(nproc 2>/dev/null || echo 1); echo $$(( cores < 4 ? cores : 4 )))

test: lint system-packages
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# Committed records name the commit that made them (git_commit): with uncommitted changes outside the result
# folders, no commit holds the code, so the targets that remake committed records refuse to run. ALLOW_DIRTY=1
# runs anyway (the records then say `+dirty`).
clean-tree:
	@changes="$$(git status --porcelain -- . ':(exclude)results' ':(exclude)submissions/*/results' 2>/dev/null)"; \
	if [ -n "$$changes" ] && [ -z "$(ALLOW_DIRTY)" ]; then \
		echo "$$changes" | head -20 >&2; \
		echo "make $(MAKECMDGOALS): the working tree has uncommitted changes (above): commit them first, so that" \
			"the records name a commit holding their code (ALLOW_DIRTY=1 runs anyway)" >&2; \
		exit 1; \
	fi

# The committed baseline records: the reference backbones on both embedded tasks through every track, and each
# other offline task's default backbone (one quick-budget baseline per task).
baselines: setup clean-tree
	$(BIN)/effbench run --method $(BACKBONES) --task digits mnist1d --track $(BASELINE_TRACKS) \
		--budget quick --seed 0 --out results/baselines
	$(BIN)/effbench run --method mlp resnet-cifar --task digits mnist1d --track sensitivity \
		--budget quick --seed 0 --out results/baselines
	$(BIN)/effbench run --method mlp --task breast_cancer digit-sets digits-seq mnist1d-seq \
		--track $(BASELINE_TRACKS) --budget quick --seed 0 --out results/baselines
	$(BIN)/effbench run --method embedding-mlp --task ctr-synth listops-short listops-long \
		--track $(BASELINE_TRACKS) --budget quick --seed 0 --out results/baselines
	$(BIN)/effbench run --method fcn-small --task seg-shapes sr-photos-x2 sr-photos-x3 \
		--track $(BASELINE_TRACKS) --budget quick --seed 0 --out results/baselines
	$(BIN)/effbench run --method resnet-cifar --task texture-patches shapes32 \
		--track $(BASELINE_TRACKS) --budget quick --seed 0 --out results/baselines

# The methods of the binarization suite that binarize a task's CNN / MLP backbone (the other four binarize the
# tiny transformer); the sweep runs them on BiBench's second CNN backbone too (closed: a protocol backbone).
BINARIZATION_CNN_METHODS := bnn xnor dorefa bireal xnorpp reactnet recu fda reste biper bitnet158 ternary-nlg \
	binarydm-lmb pb-partial mst

# The committed binarization-suite records: every method of the suite (and its FP32 twin) on both embedded
# tasks (resnet-cifar on digits, mlp on mnist1d, tiny-transformer for the transformer methods), the CNN
# methods with vgg-small on digits, 3 seeds, plus the papers' CIFAR-10 reference values.
binarization: setup clean-tree
	$(BIN)/effbench run --suite binarization --task digits mnist1d --track $(BINARIZATION_TRACKS) \
		--budget quick --seed 0 1 2 --out results/binarization
	$(BIN)/effbench run --method $(addsuffix :backbone=vgg-small,$(BINARIZATION_CNN_METHODS)) --task digits \
		--track $(BINARIZATION_TRACKS) --budget quick --seed 0 1 2 --out results/binarization
	$(BIN)/effbench paper-records suites/binarization/paper_results.yaml --out results/binarization
	$(BIN)/effbench table --suite binarization --out results/binarization --format markdown

bench: setup
	$(BIN)/python benchmarks/harness_overhead.py

# The quantization suite (docs/suites.md): the post-training methods are deterministic given the trained twin (one
# seed); the quantization-aware ones and the searches train (three seeds on digits). zeroq distils its data from
# batch-norm statistics, which the mlp of mnist1d has none of. qat-4bit's sweep: bits x ResNet depth, as its paper.
QUANTIZATION_POST := ptq-int8 adaquant hessian-mp
QUANTIZATION_TRAINED := qat-int8 qat-4bit qfx shiftquant fliqs simq-nas quantnas
QAT_4BIT_SWEEP := $(foreach bits,2 4 8,$(foreach depth,8 20 32,qat-4bit:bits=$(bits)$(comma)backbone=resnet-cifar:depth=$(depth)))
quantization: setup clean-tree
	$(BIN)/effbench run --method $(QUANTIZATION_POST) zeroq --task digits --track $(QUANTIZATION_TRACKS) \
		--budget quick --seed 0 --out results/quantization
	$(BIN)/effbench run --method $(QUANTIZATION_POST) --task mnist1d --track $(QUANTIZATION_TRACKS) \
		--budget quick --seed 0 --out results/quantization
	$(BIN)/effbench run --method $(QUANTIZATION_TRAINED) --task digits --track $(QUANTIZATION_TRACKS) \
		--budget quick --seed 0 1 2 --out results/quantization
	$(BIN)/effbench run --method $(QUANTIZATION_TRAINED) --task mnist1d --track $(QUANTIZATION_TRACKS) \
		--budget quick --seed 0 --out results/quantization
	$(BIN)/effbench run --method $(QAT_4BIT_SWEEP) --task digits --track accuracy complexity training_cost \
		--budget quick --seed 0 --out results/quantization
	$(BIN)/effbench table --suite quantization --out results/quantization --format markdown

# The pruning suite (docs/suites.md): ShrinkBench's protocol, one trained twin per seed shared by every method and
# sparsity level. Curves over sparsity for the four unstructured methods; the others at their paper's target or at
# 0.75; the structured ones on mobilenetv2 too; rnn-sparsity on the sequence view of mnist1d; factor-moe, which
# splits dense FFNs, on mnist1d only; bn-only not on mnist1d, whose mlp has no batch norm.
PRUNING_CURVE := $(foreach method,gmp random-erk lottery-jackpot layer-adaptive-dp,$(foreach s,0.5 0.75 0.9 0.95,$(method):sparsity=$(s)))
PRUNING_STRUCTURED := polarization masksparsity oto-hesso pqi-sap class-dependent
PRUNING_OTHERS := nm-srste nm-srste:m=4$(comma)n=1 random-search-sparse ftwt trp ap-activate emo-pms aptp-router bn-only
# Breadth first: every method once (seed 0) before the second and third seeds, so a sweep cut short still
# covers the whole roster; re-running resumes where it stopped.
# Each architecture on the task it was made for, at matched cost: the runs are suites/architectures/protocol.py's
# SIZED_RUNS, one line per task.
architectures: setup clean-tree
	$(BIN)/python -m suites.architectures.protocol | while read -r task methods; do \
		$(BIN)/effbench run --method $$methods --task $$task --track $(ARCHITECTURE_TRACKS) \
			--budget quick --seed 0 1 2 --out results/architectures || exit 1; \
	done
	$(BIN)/effbench table --suite architectures --out results/architectures --format markdown

pruning: setup clean-tree
	$(BIN)/effbench run --method $(PRUNING_CURVE) $(PRUNING_STRUCTURED) $(PRUNING_OTHERS) --task digits \
		--track $(PRUNING_TRACKS) --budget quick --seed 0 --out results/pruning
	$(BIN)/effbench run --method $(PRUNING_CURVE) $(filter-out bn-only,$(PRUNING_OTHERS)) factor-moe --task mnist1d \
		--track $(PRUNING_TRACKS) --budget quick --seed 0 --out results/pruning
	$(BIN)/effbench run --method $(addsuffix :backbone=mobilenetv2,$(PRUNING_STRUCTURED)) --task digits \
		--track $(PRUNING_TRACKS) --budget quick --seed 0 --out results/pruning
	$(BIN)/effbench run --method rnn-sparsity rnn-sparsity:mode=random-graph --task mnist1d-seq \
		--track $(PRUNING_TRACKS) --budget quick --seed 0 1 2 --out results/pruning
	$(BIN)/effbench run --method $(PRUNING_CURVE) $(PRUNING_STRUCTURED) $(PRUNING_OTHERS) --task digits \
		--track $(PRUNING_TRACKS) --budget quick --seed 0 1 2 --out results/pruning
	$(BIN)/effbench table --suite pruning --out results/pruning --format markdown

# The figures in docs/, drawn from the committed records (effbench plot, docs/command-line.md).
figures: setup
	$(BIN)/effbench plot docs/quantization-pareto-digits.png --out results/quantization --suite quantization \
		--task digits --x size_bits --log-x --front
	$(BIN)/effbench plot docs/quantization-qat-4bit-sweep.png --out results/quantization --method qat-4bit \
		--task digits --x size_bits --series bits --log-x --front
	$(BIN)/effbench plot docs/pruning-curves-digits.png --out results/pruning --suite pruning --task digits \
		--x params_nonzero --log-x --front
	$(BIN)/effbench plot docs/pruning-curves-mnist1d.png --out results/pruning --suite pruning --task mnist1d \
		--x params_nonzero --log-x --front
