# `make test` and `make demo` must work on a fresh machine: everything they need is
# installed here, into .venv (Python packages) or with apt-get (servers), when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint types unit demo demo-starlette bench venv clean postgres chromium redis

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

# PostgreSQL's server programs, for the Django tests against real servers and a real
# database (tests/django/pgserver.py starts a throwaway cluster). Debian keeps initdb in
# /usr/lib/postgresql/*/bin, off PATH.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	|| { $(SUDO) apt-get update -qq \
	&& $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# Redis, the broker and result backend of the Celery tests (tests/celery/redisserver.py
# starts a throwaway server on a free port). The Debian package may also start a system
# Redis on 6379, which the tests never use.
redis:
	@command -v redis-server >/dev/null 2>&1 || { $(SUDO) apt-get update -qq \
	&& $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# A headless browser for the waterfall screenshot tests (tests/django).
chromium:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq \
	&& $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Two sessions: the core (no Django configured), then the Django adapter with
# pytest-django and the test project in tests/django.
unit: $(STAMP) postgres chromium redis
	$(VENV)/bin/pytest
	$(VENV)/bin/pytest tests/django --ds=wove_testproject.settings

test: lint types unit

# The example bookshop (example_project/): migrate and seed its database (the SQLite
# file example_project/db.sqlite3, or DATABASE_URL=postgres://user:pw@host/db), then
# serve it and print its pages; Ctrl-C stops it. The core's tour without Django:
# $(PY) examples/demo.py
DEMO_ADDR ?= 127.0.0.1:8000
demo: $(STAMP)
	$(PY) example_project/manage.py migrate --noinput --verbosity 0
	$(PY) example_project/manage.py seed
	$(PY) example_project/manage.py runserver $(DEMO_ADDR) --noreload

# The same bookshop on Starlette (example_project/starlette_app.py, docs/starlette.md),
# served by uvicorn; its SQLite file is made and seeded at startup. Ctrl-C stops it.
STARLETTE_HOST ?= 127.0.0.1
STARLETTE_PORT ?= 8001
demo-starlette: $(STAMP)
	@echo "Bookshop (Starlette) on http://$(STARLETTE_HOST):$(STARLETTE_PORT)/"
	@echo "  /authors/charles-dickens               the author page, with Wove"
	@echo "  /authors/charles-dickens?sequential=1  the same steps one after the other"
	@echo "  POST /authors/charles-dickens/order?mode=background|fork  detaches the receipt"
	@echo "  /wove/                                 the trace pages"
	$(VENV)/bin/uvicorn starlette_app:app --app-dir example_project \
		--host $(STARLETTE_HOST) --port $(STARLETTE_PORT) --no-access-log

# The Django workloads (bench/django) start a throwaway PostgreSQL cluster, and the
# Celery ones a throwaway Redis, so the server programs are installed first, as for
# `make unit`.
bench: $(STAMP) postgres redis
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
