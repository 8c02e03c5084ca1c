# make train: train on the generated default data; make test: run the tests.
# Both set up .venv first if needed (torch first, pinned, then the project).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
# extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url <a PyTorch wheel index>"
TORCH_PIP_ARGS ?=
ARGS ?=


.PHONY: install train test test-fast lint format tensorboard sweep-report bench bench-gpu bench-accuracy clean serve bench-serve

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

train: install
	$(PY) src/train.py $(ARGS)

# two test processes, one thread each: 2 cores, no oversubscription. Installs nothing outside
# .venv: the browser test runs where Debian's chromium and chromium-driver are (CI installs them,
# .ci/run) and skips elsewhere, saying why.
test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile $(ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(ARGS)

lint: install
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

format: install
	$(PY) -m ruff format src tests
	$(PY) -m ruff check --fix src tests

# speed and memory figures (prints a table, writes benchmarks/results.json); a few minutes
bench: install
	$(PY) benchmarks/bench.py $(ARGS)

# the same on a CUDA GPU: Lightning against a plain loop, precision x layout x compile, loader
# against GPU, TFLOP/s, peak memory (stops at once, exit 2, without CUDA)
bench-gpu: install
	$(PY) benchmarks/bench.py --device cuda $(ARGS)

# Dice at full resolution for a training budget: trains each recipe, scores its best checkpoint
# (ARGS="--data <folder> [--test-root <other cars>] --recipes carvana_cpu --budget 00:00:10:00
# --seeds 0 1 2"; benchmarks/bench_accuracy.py --help)
bench-accuracy: install
	$(PY) benchmarks/bench_accuracy.py $(ARGS)

# rank the jobs of the newest sweep (or SWEEP=outputs/train/multiruns/<time>)
sweep-report: install
	$(PY) src/sweep_report.py $(SWEEP)

# the HTTP server and its page on http://127.0.0.1:8000 (ARGS="ckpt_path=<checkpoint> [tta=true
# port=8001 ...]"; conf/serve.yaml)
serve: install
	$(PY) src/serve.py $(ARGS)

# the server under load: 8 concurrent clients x 25 photos on 127.0.0.1, against predict.py's
# images/s on the same photos (ARGS="--clients 16 --ckpt <checkpoint>"; benchmarks/bench_serve.py)
bench-serve: install
	$(PY) benchmarks/bench_serve.py $(ARGS)

tensorboard: install
	$(VENV)/bin/tensorboard --logdir outputs --host 127.0.0.1

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
