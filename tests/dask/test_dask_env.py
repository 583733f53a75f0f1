"""The Dask environment against a real LocalCluster (see conftest.py).

A task's marker file is written beside and renamed: a reader never sees it half-written.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import wove
from wove import InvalidOptionError, RemoteTaskError, RemoteWorkerLost, TaskTimeout, weave
from wove.contrib.dask import DaskEnv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(dask_cluster: Any) -> Iterator[DaskEnv]:
    dask_env = DaskEnv(dask_cluster)
    remove = wove.register_env("dask", dask_env)
    try:
        yield dask_env
    finally:
        remove()
        dask_env.close()


def wait_for(predicate: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return found


def worker_pids(cluster: Any) -> set[int]:
    from distributed import Client

    with Client(cluster, set_as_default=False) as client:
        return set(client.run(os.getpid).values())


@pytest.mark.timeout(120)
def test_tasks_run_on_the_workers_with_closures_and_dependencies(
    env: DaskEnv, dask_cluster: Any
) -> None:
    factor = 7

    with weave(base=3) as w:

        @w.do(env="dask")
        def first(base: int) -> tuple[int, int]:
            return base * factor, os.getpid()

        @w.do
        def local(first: tuple[int, int]) -> int:
            return first[0] + 1

        @w.do(["a", "b"], env="dask")
        async def each(item: str, local: int) -> str:
            return f"{item}{local}"

    assert w.result.first[0] == 21
    assert w.result.first[1] in worker_pids(dask_cluster)
    assert w.result.each == ["a22", "b22"]


@pytest.mark.timeout(120)
def test_the_functions_own_exception_comes_back(env: DaskEnv) -> None:
    with pytest.raises(LookupError, match="no such author") as caught, weave() as w:

        @w.do(env="dask")
        def author() -> None:
            raise LookupError("no such author")

    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "remote traceback (Dask task wove-author-" in notes


class Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("not picklable")


@pytest.mark.timeout(120)
def test_an_exception_that_cannot_travel_comes_back_as_text(env: DaskEnv) -> None:
    with pytest.raises(RemoteTaskError, match="Unpicklable: stays there"), weave() as w:

        @w.do(env="dask")
        def odd() -> None:
            raise Unpicklable("stays there")


@pytest.mark.timeout(120)
def test_a_queued_call_cancelled_never_runs(env: DaskEnv, tmp_path: Path) -> None:
    started = tmp_path / "started"
    ran = tmp_path / "ran"

    with pytest.raises(TaskTimeout), weave() as w:

        @w.do(["a", "b"], env="dask")
        def blockers(item: str) -> None:  # one per worker: the cluster is full
            (tmp_path / f"started-{item}").touch()
            started.touch()
            time.sleep(4)

        @w.do(env="dask", timeout=1)
        def queued() -> None:  # waits behind the blockers, times out, is cancelled
            ran.touch()

    time.sleep(5)  # the blockers are done: a call still queued would run now
    assert started.exists()
    assert not ran.exists()


@pytest.mark.timeout(180)
def test_a_worker_lost_under_a_call_fails_it(
    env: DaskEnv, dask_cluster: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"

    def kill_when_started() -> None:
        pid = int(wait_for(marker.exists, what="the call to start") and marker.read_text())
        os.kill(pid, signal.SIGKILL)

    with (
        pytest.raises(RemoteWorkerLost, match="KilledWorker") as lost,
        weave() as w,
    ):

        @w.do(env="dask")  # no timeout
        def held() -> None:
            marker.with_suffix(".part").write_text(str(os.getpid()))
            marker.with_suffix(".part").replace(marker)
            time.sleep(300)

        @w.do
        def killer() -> None:
            kill_when_started()

    assert lost.value.may_have_started is True
    # The nanny restarts the worker; the cluster goes on.
    wait_for(lambda: len(dask_cluster.scheduler_info["workers"]) == 2, what="the restart")

    with weave() as w:

        @w.do(env="dask")
        def afterwards() -> str:
            return "fine"

    assert w.result.afterwards == "fine"


def test_bad_options_are_refused() -> None:
    with pytest.raises(InvalidOptionError, match="address must be a scheduler address"):
        DaskEnv(42)
    with pytest.raises(InvalidOptionError, match="max_payload must be a number of bytes"):
        DaskEnv("tcp://127.0.0.1:8786", max_payload=0)
