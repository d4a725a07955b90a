# The README's two commands: `make demo` and `make test`. Both set everything up from nothing on a
# fresh Debian machine (system packages, .venv, torch, the project) and are fast when nothing changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= demo-data

.PHONY: demo test lint clean-demo bench-gpu

$(STAMP): pyproject.toml scripts/system-deps.sh
	bash scripts/system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[ffcv,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadscope  # pytest-xdist: one worker per core, a module on one worker so its fixtures run once (docs/benchmarks.md, "Test suite")

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/demo.sh $(DEMO)

# On a CUDA machine: every GPU figure in BENCH_MINUTES (default 8) into OUT (default bench-gpu/).
# No .venv dependency: the script uses a CUDA torch that is already there (python3 or .venv), installs
# only what is missing (WHEELS=DIR: from a folder of wheels, offline), and sets up .venv only when none is.
bench-gpu:
	bash scripts/bench-gpu.sh

clean-demo:
	rm -rf $(DEMO)
