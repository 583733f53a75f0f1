"""The ORM and Wove's lanes, in-process: the advice on async tasks, and connection hygiene
on pool threads."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connections
from django.test import AsyncClient, override_settings
from wove_testproject.shop.models import Author

from wove import weave

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_orm_in_an_async_task_names_the_lanes_that_can_run_it(
    async_client: AsyncClient,
) -> None:
    assert async_client.raise_request_exception
    with pytest.raises(SynchronousOnlyOperation) as raised:
        asyncio.run(async_client.get("/orm-in-async-task/"))
    notes = getattr(raised.value, "__notes__", [])
    [note] = [n for n in notes if "Django ORM" in n]
    assert note.startswith("wove: task 'authors' called the Django ORM from the event loop")
    assert "sync task (`def`, not `async def`)" in note  # the pool-thread lane
    assert "@w.do(thread_sensitive=True)" in note  # the request's thread
    assert "async ORM" in note


def test_a_sync_task_on_a_pool_thread_needs_no_advice() -> None:
    with weave() as w:

        @w.do
        def authors() -> int:
            return Author.objects.count()

    assert w.result["authors"] == 0


def _pool_thread_connection() -> tuple[Any, bool, int]:
    """Run one ORM task on a pool thread: its connection wrapper, whether it was open
    during the task, and the pool thread's ident."""
    with weave() as w:

        @w.do
        def query() -> tuple[Any, bool, int]:
            Author.objects.count()
            connection = connections["default"]
            return connection, connection.connection is not None, threading.get_ident()

    result: tuple[Any, bool, int] = w.result["query"]
    return result


def test_hygiene_closes_the_pool_threads_connection_after_each_task() -> None:
    connection, open_during_task, thread = _pool_thread_connection()
    assert thread != threading.get_ident()
    assert connection is not connections["default"]  # the pool thread's own
    assert open_during_task
    assert connection.connection is None  # closed as the task returned


def test_without_hygiene_the_pool_thread_keeps_its_connection_open() -> None:
    """The control: the same task with CONNECTION_HYGIENE off leaves it open."""
    with override_settings(WOVE={"CONNECTION_HYGIENE": False}):
        connection, _, _ = _pool_thread_connection()
    try:
        assert connection.connection is not None
    finally:
        connection.inc_thread_sharing()  # close it from here, not its pool thread
        try:
            connection.close()
        finally:
            connection.dec_thread_sharing()
