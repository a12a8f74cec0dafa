# The README's two commands: `make demo` and `make test`. Both start from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel; set TORCH=torch==2.13.0 --index-url ... (or any build) for GPUs.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed
# The lock: every package's version as the tests last passed with it (torch aside: TORCH pins it).
LOCK := constraints.txt

.PHONY: install demo test test-fast lint bench lock clean

$(STAMP): pyproject.toml Makefile $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls several GB of CUDA packages.
	$(PY) -m pip install -q $(TORCH)
	# everything else at the locked versions (tests/unit/test_lock.py checks the venv matches the lock)
	$(PY) -m pip install -q -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/mopo-lightning fit --config conf/quickstart.yaml

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=5 tests

# the suite without the tests marked slow (end-to-end fits, the fault campaign, sweeps): for quick iterations
test-fast: install
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" tests

# ruff with pyproject's [tool.ruff]: pycodestyle, pyflakes, bugbear, simplify, import order, the line length and
# no dead `noqa` (.ci/run runs it before the tests)
lint: install
	$(VENV)/bin/ruff check .

bench: install
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

# Refresh the lock: resolve pyproject's ranges afresh in a scratch venv, then `make test` before committing it.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q $(TORCH)
	.lock-venv/bin/python -m pip install -q -e ".[dev]"
	{ echo "# The versions make install uses (pip -c): refreshed by make lock on Python $$(.lock-venv/bin/python -c 'import platform; print(platform.python_version(), platform.machine())')."; \
	  echo "# torch is not here: the Makefile's TORCH pins it (the CPU wheel by default)."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -vE '^(torch|triton)==|^nvidia-'; } > $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) tests/.data
