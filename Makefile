# Two entry points (see README): `make demo` and `make test`. Both create .venv and install the pinned
# CPU build of torch from local disk (torch==2.13.0), then the project in editable mode with its test extras
# (constraints.txt keeps that torch; the recipe fails loudly if pip replaced it).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml Makefile constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,frameworks]'
	@$(PY) -m pip list 2>/dev/null | grep -E '^torch ' | grep -qE ' 2\.13\.0(\+cpu)?$$' || \
		{ echo "error: installing the extras replaced torch 2.13.0:"; $(PY) -m pip list | grep -E '^torch '; exit 1; }
	@$(PY) -m pip list 2>/dev/null | grep -E '^(torch|lightning|transformers|accelerate|safetensors) '
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m ur4rec.demo

test: $(STAMP)
	$(PY) -m ruff check nanprobe ur4rec tests benchmarks examples
	$(PY) -m pytest -q -ra

bench: $(STAMP)
	$(PY) benchmarks/overhead.py --json benchmarks/results/overhead.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
