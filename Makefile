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
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/demo.sh $(DEMO)

# On a CUDA machine: the GPU figures (scripts/bench-gpu.sh); OUT=DIR keeps them (JSON and bench-gpu.md).
bench-gpu: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH PY=$(PY) bash scripts/bench-gpu.sh

clean-demo:
	rm -rf $(DEMO)
