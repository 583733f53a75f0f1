"""The middleware in-process (Django's test client): traces, Server-Timing, the store."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from wove.contrib.django.recording import store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _empty_store() -> None:
    store().clear()


def test_a_sync_view_records_every_task_with_lane_and_queries(client: Client) -> None:
    response = client.get("/parallel/")
    assert response.status_code == 200
    assert response.json() == {"authors": 0, "books": 0}
    [trace] = store().recent()
    assert (trace.method, trace.path, trace.status) == ("GET", "/parallel/", 200)
    tasks = {r.task: r for r in trace.records}
    assert set(tasks) == {"authors", "books", "totals"}
    assert tasks["authors"].lane == "thread"
    assert tasks["authors"].extra["queries"] == 1
    assert "queries" not in tasks["totals"].extra  # no query, no annotation
    assert "wove.authors;dur=" in response["Server-Timing"]


def test_server_timing_follows_debug_by_default(client: Client) -> None:
    with override_settings(WOVE={}, DEBUG=False):
        assert "Server-Timing" not in client.get("/parallel/")
    with override_settings(WOVE={}, DEBUG=True):
        assert "Server-Timing" in client.get("/parallel/")


def test_an_async_view_records_its_sync_tasks(async_client: Client) -> None:
    import asyncio

    response = asyncio.run(async_client.get("/parallel-async/"))  # type: ignore[arg-type]
    assert response.status_code == 200
    [trace] = store().recent()
    assert {r.task for r in trace.records} == {"authors", "books"}
    assert all(r.lane == "thread" for r in trace.records)
