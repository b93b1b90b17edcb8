# Two entry points on a fresh machine: `make demo` (install, run the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install install-test install-docs demo test docs figures lint clean gpu-bundle

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)

install: $(VENV)/bin/activate
	$(PY) -m pip install -q -e .

install-test: $(VENV)/bin/activate
	$(PY) -m pip install -q -e '.[test,docs]'

install-docs: $(VENV)/bin/activate
	$(PY) -m pip install -q -e '.[docs]'

ARCHSEARCH := $(VENV)/bin/archsearch

# The main job, small but real, on the embedded SQLite default (studies/archsearch.db):
# a profile search, a k-sweep grid, a tiny budget frontier (3 budgets on 2,000 images), their plots and
# the report. Running it again resumes.
demo: install
	$(ARCHSEARCH) budget 50000
	$(ARCHSEARCH) search --study demo-search --budget 50000 --trials 8 --epochs 3
	$(ARCHSEARCH) best --study demo-search
	$(ARCHSEARCH) grid --study demo-ksweep --budgets 25000,50000,100000 --depths 1,2,4 --seeds 1 --epochs 3
	$(ARCHSEARCH) frontier --study demo-frontier --budgets 10000:40000:3 --trials 3 --epochs 2 --max-depth 3 --seeds 2 --data-limit 2000
	$(ARCHSEARCH) export --study demo-search --out exports/demo-search
	$(ARCHSEARCH) export --study demo-ksweep --out exports/demo-ksweep
	$(ARCHSEARCH) report --out report --init-study --seeds 0
	@echo
	@echo "plots:  exports/demo-search/, exports/demo-ksweep/ and exports/demo-frontier/ (HTML, PNG, CSV)"
	@echo "report: report/report.html"
	@echo "watch:  $(ARCHSEARCH) dashboard   (then open http://127.0.0.1:8080)"

# The tests, and the docs built strictly (a broken link or a missing page fails), as CI runs them; not with
# --quiet, which hides the warnings that strict mode counts.
test: install-test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The documentation site into site/ (git-ignored).
docs: install-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The documentation's figures and result tables, redrawn from docs/results/*.csv (PNG needs Chrome or Chromium).
figures: install
	$(PY) docs/figures.py

lint: install-test
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# gpu-bundle/: MNIST and the wheels bench/gpu_checks.sh needs on a GPU machine without Optuna (carry it there).
gpu-bundle: install
	PYTHON=$(PY) bash bench/gpu_bundle.sh

clean:
	rm -rf $(VENV) build site *.egg-info
