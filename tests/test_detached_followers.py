"""``wove.lowlevel.follow_detached``: a follower is asked in the parent, in the caller's
context, about each weave detached into its own process; what it returns runs the
child's work there (forked or spawned). A broken follower does not stop the weave."""

from __future__ import annotations

import contextvars
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wove import weave
from wove.lowlevel import ChildMode, follow_detached

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

WAIT = 30.0
where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="")


def writes_around() -> type:
    """A DetachedChild class that writes what it saw in the child after the work. Made
    in a function, so that cloudpickle sends the class itself to a spawned child (which
    cannot import this test module)."""

    class WritesAround:
        def __init__(self, path: str, origin: str, mode: str, seen: str) -> None:
            self.path = path
            self.origin = origin
            self.mode = mode
            self.seen = seen

        def __call__(self, body: Callable[[], int]) -> int:
            status = body()
            Path(self.path).write_text(
                f"{self.mode} {self.seen} {os.getpid()} {status} {self.origin}",
                encoding="utf-8",
            )
            return status

    return WritesAround


@pytest.fixture
def children() -> Iterator[list[int]]:
    started: list[int] = []
    yield started
    for pid in started:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"pytest" in cmdline or b"wove.spawn_child" in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"no {what} after {WAIT} s"
        time.sleep(0.02)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_a_follower_runs_the_childs_work(
    mode: ChildMode, tmp_path: Path, children: list[int]
) -> None:
    report = tmp_path / "report"
    ran = tmp_path / "ran"
    asked: list[tuple[str, str]] = []
    child_class = writes_around()

    def follower(origin: str, how: ChildMode) -> object:
        asked.append((origin, how))
        return child_class(str(report), origin, how, where.get())

    def work() -> None:
        ran.write_text("ran", encoding="utf-8")

    stop = follow_detached(follower)
    token = where.set("the caller's context")
    try:
        with weave(background=True, fork=mode) as w:
            w.do(work)
    finally:
        where.reset(token)
        stop()
    assert w.pid is not None
    children.append(w.pid)
    ((origin, how),) = asked
    assert how == mode
    assert origin.endswith(f"test_detached_followers.py:{origin.rpartition(':')[2]}")
    _until(report.exists, "report of the child")
    assert ran.read_text(encoding="utf-8") == "ran"  # the work ran before the follower wrote
    seen_mode, *seen, pid, status, seen_origin = report.read_text(encoding="utf-8").split()
    assert seen_mode == mode
    assert " ".join(seen) == "the caller's context"
    assert int(pid) == w.pid
    assert status == "0"
    assert seen_origin == origin


@pytest.mark.timeout(60)
def test_a_broken_follower_is_logged_and_the_weave_still_runs(
    tmp_path: Path, children: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    ran = tmp_path / "ran"

    def broken(origin: str, how: ChildMode) -> None:
        raise RuntimeError("follower is broken")

    def work() -> None:
        ran.write_text("ran", encoding="utf-8")

    stop = follow_detached(broken)
    try:
        with (
            caplog.at_level(logging.ERROR, logger="wove"),
            weave(background=True, fork="fork") as w,
        ):
            w.do(work)
    finally:
        stop()
    assert w.pid is not None
    children.append(w.pid)
    assert "detach follower" in caplog.text
    assert "follower is broken" in caplog.text
    _until(ran.exists, "run of the child")


@pytest.mark.timeout(60)
def test_a_follower_that_declines_is_asked_until_stopped(
    tmp_path: Path, children: list[int]
) -> None:
    ran = tmp_path / "ran"
    asked: list[str] = []

    def declines(origin: str, how: ChildMode) -> None:
        asked.append(how)

    def work() -> None:
        ran.write_text("ran", encoding="utf-8")

    stop = follow_detached(declines)
    try:
        with weave(background=True, fork="fork") as w:
            w.do(work)
    finally:
        stop()
    assert w.pid is not None
    children.append(w.pid)
    assert asked == ["fork"]
    _until(ran.exists, "run of the child")
    stop()  # removing twice is harmless
    with weave(background=True, fork="fork") as again:
        again.do(work)
    assert again.pid is not None
    children.append(again.pid)
    assert asked == ["fork"]  # no longer asked once stopped
