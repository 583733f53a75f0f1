"""Inside transaction.atomic, sync tasks default to the request's thread (and its
transaction); a weave or a task can opt into the pool."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from wove.contrib.django.recording import store

pytestmark = pytest.mark.django_db(transaction=True)


def _lanes() -> dict[str, str]:
    [trace] = store().recent()
    return {r.task: r.lane for r in trace.records}


def test_inside_atomic_sync_tasks_share_the_transaction_unless_they_opt_out(
    client: Client,
) -> None:
    store().clear()
    assert client.get("/in-atomic/").json() == {"seen": True}
    assert _lanes() == {
        "default_lane": "caller",
        "opted_out": "thread",
        "whole_weave_opted_out": "thread",
    }


def test_with_atomic_parallel_the_pool_is_used_and_the_row_is_not_seen(client: Client) -> None:
    store().clear()
    with override_settings(WOVE={"ATOMIC": "parallel", "SERVER_TIMING": True}):
        assert client.get("/in-atomic/").json() == {"seen": False}
        assert _lanes()["default_lane"] == "thread"


def test_outside_a_transaction_sync_tasks_run_in_parallel(client: Client) -> None:
    store().clear()
    client.get("/parallel/")
    assert set(_lanes().values()) == {"thread"}


def test_thread_sensitive_tasks_have_their_queries_counted(client: Client) -> None:
    store().clear()
    client.get("/in-atomic/")
    [trace] = store().recent()
    default = next(r for r in trace.records if r.task == "default_lane")
    assert default.extra["queries"] == 1
