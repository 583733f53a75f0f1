# `make test` and `make demo` must work on a fresh machine: everything they need is
# installed here, into .venv (Python packages) or with apt-get (servers), when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint types unit demo bench venv clean

venv: $(STAMP)

# The package is installed (not linked) and pytest runs from .venv/bin, so the tests
# import what a user would install, not the source tree by accident; any change under
# wove/ reinstalls it.
$(STAMP): pyproject.toml $(shell find wove -name '*.py' -o -name 'py.typed')
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --force-reinstall --no-deps .
	$(PY) -m pip install --quiet ".[test]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

types: $(STAMP)
	$(VENV)/bin/mypy --strict wove

# Two sessions: the core (no Django configured), then the Django adapter with
# pytest-django and the test project in tests/django.
unit: $(STAMP)
	$(VENV)/bin/pytest
	DJANGO_SETTINGS_MODULE=wove_testproject.settings $(VENV)/bin/pytest tests/django

test: lint types unit

demo: $(STAMP)
	$(PY) examples/demo.py

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
