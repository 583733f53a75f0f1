# `make test` and `make demo` must work on a fresh machine: everything they need is
# installed here, into .venv (Python packages) or with apt-get (servers), when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint types unit demo demo-starlette demo-worker demo-worker-stop bench venv clean \
	postgres chromium redis

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
demo-worker: $(STAMP) redis
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
