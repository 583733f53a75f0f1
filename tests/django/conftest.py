"""Fixtures for the Django session: a real PostgreSQL server, fresh migrated databases,
and real gunicorn / uvicorn servers running the test project against them."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pgserver import PgServer, PostgresUnavailable, start_postgres
from servers import Servers, migrate

TEMPLATE = "wove_template"
_names = itertools.count(1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that started servers shows their logs."""
    report = yield
    started: Servers | None = getattr(item, "wove_servers", None)
    if report.failed and started is not None:
        for server in started.started:
            title = f"{server.kind} on port {server.port} ({server.log_path})"
            report.sections.append((title, server.log()[-20000:]))
    return report


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """A PostgreSQL server of its own for this session, stopped (by PID) at the end."""
    try:
        server = start_postgres(str(tmp_path_factory.mktemp("postgres")))
    except PostgresUnavailable as exc:
        pytest.fail(f"{exc} (`make postgres`)", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def migrated_template(postgres: PgServer) -> str:
    """A migrated database that fresh ones are copied from (``CREATE DATABASE .. TEMPLATE``)."""
    with postgres.connect() as admin:
        admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
    migrate(postgres.url_for(TEMPLATE))
    return TEMPLATE


@pytest.fixture
def fresh_database(postgres: PgServer, migrated_template: str) -> Callable[[], str]:
    """Make a new migrated database for one server; returns its name."""

    def make() -> str:
        name = f"wove_{os.getpid()}_{next(_names)}"
        with postgres.connect() as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"')
        return name

    return make


@pytest.fixture
def servers(
    request: pytest.FixtureRequest,
    postgres: PgServer,
    fresh_database: Callable[[], str],
    tmp_path: Path,
) -> Iterator[Servers]:
    """Start real servers in a test; they are stopped after it, and their logs are shown
    if it failed."""
    started = Servers(postgres, fresh_database, tmp_path)
    request.node.wove_servers = started
    try:
        yield started
    finally:
        started.close()
