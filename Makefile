# The README's two commands: `make demo` and `make test`. Both start from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel; set TORCH=torch==2.13.0 --index-url ... (or any build) for GPUs.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls several GB of CUDA packages.
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/mopo-lightning fit --config conf/quickstart.yaml

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=5 tests

# the suite without the tests marked slow (end-to-end fits, the fault campaign, sweeps): for quick iterations
test-fast: install
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" tests

bench: install
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) tests/.data
