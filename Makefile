# rlsd: the two commands are `make demo` and `make test`. Both create .venv if it is missing.
#
# TORCH_SPEC pins torch so that a CPU machine never pulls a multi-GB CUDA build.
# On a GPU machine: make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
TORCH_SPEC  ?= torch==2.13.0
STAMP       := $(VENV)/.installed
NOTEBOOKS   := $(wildcard notebooks/[0-9][0-9]_*.ipynb)
PYTEST_ARGS ?=

.PHONY: install demo reproduce test test-fast notebooks bench lock clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

## The main job: RL fine-tune of the shipped ShapesWorld base model on the three tasks (CPU, minutes).
demo: install
	$(PY) -m rlsd.demo

## The study: base, ours and every baseline (RAFT, RWR, ReFL, DRaFT, DDPO), ablations, 3 TEST seeds, into data/results
## and docs/results.md (hours on 2 CPU cores, see docs/results.md; not part of make test). Resumes finished runs.
REPRODUCE_ARGS ?= --seeds 0-2
reproduce: install
	OMP_NUM_THREADS=1 $(PY) -m rlsd.reproduce $(REPRODUCE_ARGS)

## The whole suite: unit, property, distributed (2 gloo processes), CLI smoke tests, and nbval.
test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)
	$(PY) -m pytest --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg \
		-p no:cacheprovider $(NOTEBOOKS)

test-fast: install
	$(PY) -m pytest tests -m "not slow" -x $(PYTEST_ARGS)

## Re-execute every notebook at its default (CPU) parameters, in place, as CI's nbval reference.
notebooks: install
	for nb in $(NOTEBOOKS); do \
		$(VENV)/bin/papermill --cwd notebooks -k python3 $$nb $$nb || exit 1; \
	done

bench: install
	$(PY) benchmarks/bench_sampler.py
	$(PY) benchmarks/bench_iteration.py
	$(PY) benchmarks/bench_scaling.py

## Rewrite requirements.lock and environment.yml from the current .venv (keep them in agreement).
lock:
	$(PY) tools/write_lock.py

clean:
	rm -rf $(VENV) .pytest_cache runs outputs
