# `make test` and `make demo` must work on a fresh machine: everything they need is
# installed here, into .venv (Python packages) or with apt-get (servers), when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# The two stacks `make test` runs, each in its own venv: Python 3.11 with Django 5.2 LTS
# (.venv, also the demos' and the tools'), and Python 3.13 with the newest Django 6
# (.venv-py313). Python 3.13 is found on PATH or through pyenv (`pyenv prefix 3.13.0`).
DJANGO_LTS := Django>=5.2,<6
DJANGO_NEWEST := Django>=6,<7
# The first candidate that really is a 3.13 (a pyenv shim on PATH may not be active).
PYTHON313 ?= $(shell for p in "$$(pyenv prefix 3.13 2>/dev/null)/bin/python" \
	"$$(command -v python3.13)"; do "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' \
	2>/dev/null && { echo "$$p"; break; }; done)
VENV313 := .venv-py313
STAMP313 := $(VENV313)/.installed

.PHONY: test test-py313 lint types unit demo demo-starlette demo-worker demo-worker-stop bench venv clean \
	postgres chromium redis dist docs fuzz

venv: $(STAMP)

# The package is installed (not linked) and pytest runs from .venv/bin, so the tests
# import what a user would install, not the source tree by accident; any change under
# wove/ reinstalls it.
$(STAMP): pyproject.toml requirements/dev.txt $(shell find wove -name '*.py' -o -name 'py.typed')
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --force-reinstall --no-deps .
	$(PY) -m pip install --quiet ".[spawn,django,starlette,celery,process,rq,dask,opentelemetry]" \
		-r requirements/dev.txt "$(DJANGO_LTS)"
	touch $(STAMP)

$(STAMP313): pyproject.toml requirements/dev.txt $(shell find wove -name '*.py' -o -name 'py.typed')
	@test -x "$(PYTHON313)" || { echo "make test needs Python 3.13 for its second stack:" \
		"install it (pyenv install 3.13.0) or pass PYTHON313=/path/to/python3.13"; exit 1; }
	test -x $(VENV313)/bin/python || "$(PYTHON313)" -m venv $(VENV313)
	$(VENV313)/bin/python -m pip install --quiet --upgrade pip
	$(VENV313)/bin/python -m pip install --quiet --force-reinstall --no-deps .
	$(VENV313)/bin/python -m pip install --quiet ".[spawn,django,starlette,celery,process,rq,dask,opentelemetry]" \
		-r requirements/dev.txt "$(DJANGO_NEWEST)"
	touch $(STAMP313)

# The demos (`make demo`, `demo-worker`, `demo-starlette`) need only the package with its
# django, starlette and celery extras and requirements/demo.txt, not the developer tools.
$(DEMO_STAMP): pyproject.toml requirements/demo.txt $(shell find wove -name '*.py' -o -name 'py.typed')
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --force-reinstall --no-deps .
	$(PY) -m pip install --quiet ".[django,starlette,celery]" -r requirements/demo.txt
	touch $(DEMO_STAMP)

# The property tests with many more random weaves than `make test` runs, shrinking what
# fails (WOVE_FUZZ_EXAMPLES=N sets how many; 3000 by default).
fuzz: $(STAMP)
	WOVE_FUZZ=1 $(VENV)/bin/pytest tests/test_properties.py -p no:cacheprovider

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

# The second stack: types and both test sessions again, on Python 3.13 with Django 6.
test-py313: $(STAMP313) postgres chromium redis
	$(VENV313)/bin/mypy --strict wove
	$(VENV313)/bin/pytest
	$(VENV313)/bin/pytest tests/django --ds=wove_testproject.settings

test: lint types unit docs test-py313

# The example bookshop (example_project/): migrate and seed its database (the SQLite
# file example_project/db.sqlite3, or DATABASE_URL=postgres://user:pw@host/db), then
# serve it and print its pages; Ctrl-C stops it. The core's tour without Django:
# $(PY) examples/demo.py
DEMO_ADDR ?= 127.0.0.1:8000
demo: $(DEMO_STAMP)
	$(PY) example_project/manage.py migrate --noinput --verbosity 0
	$(PY) example_project/manage.py seed
	$(PY) example_project/manage.py runserver $(DEMO_ADDR) --noreload

# A Celery worker for the bookshop's royalty page (/authors/<slug>/royalties/), whose
# statement task runs on it (@w.do(env="celery")). First a Redis (the broker and result
# backend) on 127.0.0.1:$(DEMO_REDIS_PORT), without persistence, in the background, its
# pid and log in /tmp, started only if nothing answers there yet; then, in the
# foreground, `celery -A bookshop worker` from example_project/, with the same settings
# and database as `make demo`. Run `make demo` in another terminal and open the royalty
# page (`make demo` sends to redis://127.0.0.1:6390/0 by default; with another
# DEMO_REDIS_PORT, give it CELERY_BROKER_URL=redis://127.0.0.1:<port>/0 too). Ctrl-C
# stops the worker; `make demo-worker-stop` stops the Redis started here.
DEMO_REDIS_PORT ?= 6390
DEMO_REDIS_PIDFILE := /tmp/wove-demo-redis-$(DEMO_REDIS_PORT).pid
DEMO_REDIS_LOG := /tmp/wove-demo-redis-$(DEMO_REDIS_PORT).log
DEMO_REDIS_PING := $(abspath $(PY)) -c "import socket, sys; \
	s = socket.create_connection(('127.0.0.1', $(DEMO_REDIS_PORT)), 1); s.settimeout(1); \
	s.sendall(b'PING\r\n'); sys.exit(not s.recv(64).startswith(b'+PONG'))"
demo-worker: $(DEMO_STAMP) redis
	@if $(DEMO_REDIS_PING) 2>/dev/null; then \
		echo "Redis already answers on 127.0.0.1:$(DEMO_REDIS_PORT)"; \
	else \
		redis-server --port $(DEMO_REDIS_PORT) --bind 127.0.0.1 --save "" --appendonly no \
			--dir /tmp --daemonize yes --pidfile $(DEMO_REDIS_PIDFILE) \
			--logfile $(DEMO_REDIS_LOG) || exit 1; \
		for i in $$(seq 50); do $(DEMO_REDIS_PING) 2>/dev/null && break; sleep 0.1; done; \
		$(DEMO_REDIS_PING) 2>/dev/null || { echo "Redis did not start: see $(DEMO_REDIS_LOG)"; exit 1; }; \
		echo "Started Redis on 127.0.0.1:$(DEMO_REDIS_PORT), pid $$(cat $(DEMO_REDIS_PIDFILE))" \
			'(`make demo-worker-stop` stops it)'; \
	fi
	@echo 'A worker of the bookshop'"'"'s Celery app. With `make demo` in another terminal, open'
	@echo 'http://127.0.0.1:8000/authors/charles-dickens/royalties/ . Ctrl-C stops the worker.'
	cd example_project && CELERY_BROKER_URL=redis://127.0.0.1:$(DEMO_REDIS_PORT)/0 \
		CELERY_RESULT_BACKEND=redis://127.0.0.1:$(DEMO_REDIS_PORT)/0 \
		$(abspath $(VENV))/bin/celery -A bookshop worker --loglevel=INFO --concurrency=2

# Stops the Redis that `make demo-worker` started (by the pid in its pidfile).
demo-worker-stop:
	@if [ -f $(DEMO_REDIS_PIDFILE) ]; then \
		pid=$$(cat $(DEMO_REDIS_PIDFILE)); \
		if [ "$$(cat /proc/$$pid/comm 2>/dev/null)" = redis-server ]; then \
			kill $$pid && echo "Stopped Redis (pid $$pid) on 127.0.0.1:$(DEMO_REDIS_PORT)"; \
		else echo "Redis (pid $$pid) was not running"; fi; \
		rm -f $(DEMO_REDIS_PIDFILE); \
	else echo "No Redis started by make demo-worker on port $(DEMO_REDIS_PORT)"; fi

# The same bookshop on Starlette (example_project/starlette_app.py, docs/starlette.md),
# served by uvicorn; its SQLite file is made and seeded at startup. Ctrl-C stops it.
STARLETTE_HOST ?= 127.0.0.1
STARLETTE_PORT ?= 8001
demo-starlette: $(DEMO_STAMP)
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

# The sdist and the wheel, in dist/, checked as a user gets them (scripts/check_dist.py):
# built with no warning, LICENSE in both, `twine check --strict`, then the wheel installed
# into a fresh venv once per user extra (none, spawn, django, starlette, celery,
# opentelemetry) and the matching wove.contrib module imported there.
dist: $(STAMP)
	$(PY) scripts/check_dist.py

# The documentation site (mkdocs.yml: MkDocs with the Material theme, the API reference
# generated from the docstrings by mkdocstrings), built into site/ in strict mode: a broken
# link or anchor, a page missing from the nav, or a reference that does not resolve fails
# the build. Its requirements (requirements/docs.txt) are installed into .venv once.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): requirements/docs.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements/docs.txt
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(VENV313) .mypy_cache .ruff_cache .pytest_cache build *.egg-info site
