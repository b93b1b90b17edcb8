# Two entry points on a fresh machine: `make demo` (install, run the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install install-test demo test lint clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)

install: $(VENV)/bin/activate
	$(PY) -m pip install -q -e .

install-test: $(VENV)/bin/activate
	$(PY) -m pip install -q -e '.[test]'

demo: install
	$(VENV)/bin/archsearch budget 50000
	$(VENV)/bin/archsearch baseline

test: install-test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: install-test
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info
