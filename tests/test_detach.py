"""Detached weaves with real processes: ``weave(background=True, fork=...)`` (SPEC §7).

Each scenario starts ``tests/detach_scripts/parent.py`` as a server-like parent process
that listens on a port of 127.0.0.1, detaches a weave and exits at once (or lingers
without ever reaping). What the detached child did is read from the files it writes and
from ``/proc``. Every process started here is killed by pid in teardown.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="reads /proc to observe the processes"
    ),
]

SCRIPT = Path(__file__).parent / "detach_scripts" / "parent.py"
DEADLINE = 10.0
TASK_SECONDS = 1.5  # how long the detached weave runs in the scenarios that observe it


# --- observing processes -------------------------------------------------------------------


def proc_stat(pid: int) -> dict[str, Any] | None:
    """state, ppid and session of a process from /proc/<pid>/stat; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return {"state": fields[0], "ppid": int(fields[1]), "session": int(fields[3])}


def is_running(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat["state"] != "Z"


def children_of(ppid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is ``ppid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = proc_stat(int(entry))
        if stat is not None and stat["ppid"] == ppid:
            found.append((int(entry), stat["state"]))
    return found


def poll(predicate: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def read_json_file(path: Path) -> dict[str, Any]:
    assert poll(path.exists), f"{path.name} did not appear within {DEADLINE} s"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def port_is_free(port: int) -> int | None:
    """Bind 127.0.0.1:port plainly (no SO_REUSEADDR); None if it worked, else the errno."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind(("127.0.0.1", port))
    except OSError as error:
        return error.errno
    finally:
        probe.close()
    return None


# --- starting and stopping parents ---------------------------------------------------------


@dataclass
class Processes:
    """Everything started for one scenario; all of it is killed by pid at teardown."""

    parents: list[subprocess.Popen[str]] = field(default_factory=list)
    children: list[tuple[int, str]] = field(default_factory=list)  # (pid, cmdline token)

    def stop_all(self) -> None:
        for pid, token in self.children:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except (FileNotFoundError, ProcessLookupError):
                continue
            if token.encode() not in cmdline:
                continue  # the pid was reused by something that is not ours
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for parent in self.parents:
            if parent.poll() is None:
                try:
                    os.kill(parent.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            parent.communicate()


def child_token(mode: str, out: Path) -> str:
    # A forked child keeps the parent's command line (which names `out`); a spawned one
    # runs `python -m wove.spawn_child`.
    return str(out) if mode == "fork" else "wove.spawn_child"


def parent_command(mode: str, scenario: str, out: Path, *options: str) -> list[str]:
    return [sys.executable, str(SCRIPT), mode, scenario, str(out), *options]


@pytest.fixture(scope="module")
def processes() -> Iterator[Processes]:
    started = Processes()
    yield started
    started.stop_all()


def wait_until_gone(pid: int) -> bool:
    """True once ``pid`` has exited (gone, or a zombie of someone else's)."""
    return poll(lambda: not is_running(pid))


# --- scenario: the parent detaches a weave and exits at once ------------------------------


@dataclass
class ExitedRun:
    mode: str
    out: Path
    report: dict[str, Any]
    parent_stderr: str
    child_running_at_parent_eof: bool
    stat_while_running: dict[str, Any] | None
    bind_errno: int | None
    child_ran_through_bind: bool
    on_done: dict[str, Any]
    child_exited: bool

    @property
    def child_pid(self) -> int:
        pid: int = self.report["child_pid"]
        return pid

    def lines(self, name: str) -> list[str]:
        path = self.out / name
        return path.read_text(encoding="utf-8").split() if path.exists() else []


def run_exiting_parent(
    mode: str, scenario: str, out: Path, processes: Processes, *options: str
) -> ExitedRun:
    out.mkdir(parents=True, exist_ok=True)
    parent = subprocess.Popen(
        parent_command(mode, scenario, out, *options),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.parents.append(parent)
    stdout, stderr = parent.communicate(timeout=DEADLINE)
    on_done_path = out / "on_done.json"
    assert parent.returncode == 0, stderr
    report = json.loads(stdout)
    child_pid = report["child_pid"]
    assert isinstance(child_pid, int), report
    processes.children.append((child_pid, child_token(mode, out)))

    # The parent has exited and its stdout/stderr pipes reached EOF: if the child still
    # runs now, it does not hold them.
    running_at_eof = is_running(child_pid) and not on_done_path.exists()
    stat = proc_stat(child_pid)
    bind_errno = port_is_free(report["port"])
    ran_through_bind = is_running(child_pid) and not on_done_path.exists()

    on_done = read_json_file(on_done_path)
    exited = wait_until_gone(child_pid)
    return ExitedRun(
        mode=mode,
        out=out,
        report=report,
        parent_stderr=stderr,
        child_running_at_parent_eof=running_at_eof,
        stat_while_running=stat,
        bind_errno=bind_errno,
        child_ran_through_bind=ran_through_bind,
        on_done=on_done,
        child_exited=exited,
    )


@pytest.fixture(scope="module", params=["fork", "spawn"])
def exited_ok(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    processes: Processes,
) -> ExitedRun:
    mode: str = request.param
    out = tmp_path_factory.mktemp(f"exited-ok-{mode}")
    options = ["--seconds", str(TASK_SECONDS)]
    if mode == "fork":
        options.append("--hook")
    return run_exiting_parent(mode, "ok", out, processes, *options)


@pytest.fixture(scope="module", params=["fork", "spawn"])
def exited_failing(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    processes: Processes,
) -> ExitedRun:
    mode: str = request.param
    out = tmp_path_factory.mktemp(f"exited-fail-{mode}")
    return run_exiting_parent(mode, "fail", out, processes, "--log", "--seconds", "0.2")


def test_parent_returns_from_the_block_at_once(exited_ok: ExitedRun) -> None:
    elapsed = exited_ok.report["elapsed"]
    assert elapsed < 0.1, f"{exited_ok.mode}: the block took {elapsed:.4f} s in the parent"


def test_on_done_runs_in_the_child_with_its_own_pid(exited_ok: ExitedRun) -> None:
    record, report = exited_ok.on_done, exited_ok.report
    assert record["pid"] != report["parent_pid"]
    assert record["pid"] == exited_ok.child_pid, "w.pid is not the pid that ran on_done"
    assert record["error_type"] is None, record
    assert record["final"] == f"slept {TASK_SECONDS}"
    # on_done is a closure (shipped by cloudpickle for spawn): its cell arrived intact.
    assert record["tag"] == f"closure-{exited_ok.mode}"
    assert exited_ok.child_exited, "the detached child did not exit after on_done"


def test_child_is_in_a_new_session_and_not_under_the_parent(exited_ok: ExitedRun) -> None:
    stat = exited_ok.stat_while_running
    report = exited_ok.report
    assert stat is not None, "the detached child was not running right after the parent exited"
    assert stat["state"] != "Z"
    assert stat["ppid"] != report["parent_pid"]
    assert stat["session"] != report["parent_sid"]
    # Seen from inside the child too.
    assert exited_ok.on_done["sid"] != report["parent_sid"]
    assert exited_ok.on_done["ppid"] != report["parent_pid"]


def test_child_does_not_hold_the_parents_output_pipes(exited_ok: ExitedRun) -> None:
    # communicate() returned (EOF on the parent's stdout and stderr) while the child ran.
    assert exited_ok.child_running_at_parent_eof


def test_listening_port_can_be_bound_again_while_the_child_runs(exited_ok: ExitedRun) -> None:
    assert exited_ok.child_ran_through_bind, "the child was not running during the bind"
    assert exited_ok.bind_errno is None, (
        f"{exited_ok.mode}: binding the parent's closed port failed with "
        f"{errno.errorcode.get(exited_ok.bind_errno or 0)}: the child holds the listening socket"
    )


def test_parents_atexit_handler_does_not_run_in_the_child(exited_ok: ExitedRun) -> None:
    assert exited_ok.child_exited
    assert exited_ok.lines("atexit.txt") == [str(exited_ok.report["parent_pid"])]


@pytest.mark.parametrize("exited_ok", ["fork"], indirect=True)
def test_at_detached_child_hooks_run_in_the_child_only(exited_ok: ExitedRun) -> None:
    assert exited_ok.child_exited
    assert exited_ok.lines("hook.txt") == [str(exited_ok.child_pid)]


def test_failing_task_in_the_child_reaches_on_done(exited_failing: ExitedRun) -> None:
    record = exited_failing.on_done
    assert record["pid"] == exited_failing.child_pid
    assert record["pid"] != exited_failing.report["parent_pid"]
    assert record["error_type"] == "ValueError"
    assert record["error"] == "detached boom"
    assert record["final"] is None


def test_failing_task_in_the_child_is_logged_to_detached_output(
    exited_failing: ExitedRun,
) -> None:
    assert exited_failing.child_exited
    log = exited_failing.out / "detached.log"
    assert log.exists(), "configure(detached_output=...) file was not written by the child"
    text = log.read_text(encoding="utf-8")
    assert "Traceback" in text
    assert "ValueError: detached boom" in text
    assert "failed" in text
    # Nothing of it went to the parent's stderr (the parent had exited long before).
    assert "detached boom" not in exited_failing.parent_stderr


def test_failing_child_leaves_the_parents_atexit_alone(exited_failing: ExitedRun) -> None:
    assert exited_failing.child_exited
    assert exited_failing.lines("atexit.txt") == [str(exited_failing.report["parent_pid"])]


# --- scenario: the parent stays alive and never reaps -------------------------------------


@dataclass
class LingeringRun:
    mode: str
    report: dict[str, Any]
    stat_while_running: dict[str, Any] | None
    bind_errno: int | None
    on_done: dict[str, Any]
    parent_alive_at_check: bool
    zombies: list[tuple[int, str]]
    children_at_check: list[tuple[int, str]]


@pytest.fixture(scope="module", params=["fork", "spawn"])
def lingering(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    processes: Processes,
) -> LingeringRun:
    mode: str = request.param
    out = tmp_path_factory.mktemp(f"lingering-{mode}")
    parent = subprocess.Popen(
        parent_command(mode, "ok", out, "--linger", "--seconds", "1.0"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.parents.append(parent)
    assert parent.stdout is not None
    assert parent.stdin is not None
    ready, _, _ = select.select([parent.stdout], [], [], DEADLINE)
    assert ready, "the lingering parent printed nothing"
    report = json.loads(parent.stdout.readline())
    child_pid = report["child_pid"]
    assert isinstance(child_pid, int), report
    processes.children.append((child_pid, child_token(mode, out)))

    stat = proc_stat(child_pid)
    bind_errno = port_is_free(report["port"])  # the parent closed it and lives on
    on_done = read_json_file(out / "on_done.json")
    wait_until_gone(child_pid)

    parent_pid = report["parent_pid"]

    def no_zombie_children() -> bool:
        return all(state != "Z" for _, state in children_of(parent_pid))

    # Give a reaper (if the library needs one) a moment; a zombie that stays is a failure.
    poll(no_zombie_children, timeout=3.0)
    children = children_of(parent_pid)
    alive = parent.poll() is None

    parent.stdin.write("exit\n")
    parent.stdin.flush()
    parent.communicate(timeout=DEADLINE)
    return LingeringRun(
        mode=mode,
        report=report,
        stat_while_running=stat,
        bind_errno=bind_errno,
        on_done=on_done,
        parent_alive_at_check=alive,
        zombies=[child for child in children if child[1] == "Z"],
        children_at_check=children,
    )


def test_no_zombie_is_left_under_a_parent_that_never_reaps(lingering: LingeringRun) -> None:
    assert lingering.parent_alive_at_check, "the parent must still be alive for this check"
    assert lingering.on_done["pid"] == lingering.report["child_pid"]
    assert lingering.zombies == [], (
        f"{lingering.mode}: <defunct> children under the parent: {lingering.zombies}"
    )


def test_child_runs_in_a_new_session_while_the_parent_lives(lingering: LingeringRun) -> None:
    stat = lingering.stat_while_running
    assert stat is not None
    assert stat["state"] != "Z"
    assert stat["session"] != lingering.report["parent_sid"]


@pytest.mark.parametrize("lingering", ["fork"], indirect=True)
def test_forked_child_is_reparented_away_from_a_live_parent(lingering: LingeringRun) -> None:
    stat = lingering.stat_while_running
    assert stat is not None
    assert stat["ppid"] != lingering.report["parent_pid"], "no double fork: still our child"
    assert lingering.on_done["ppid"] != lingering.report["parent_pid"]


def test_port_closed_by_a_live_parent_is_free_while_the_child_runs(
    lingering: LingeringRun,
) -> None:
    assert lingering.bind_errno is None, (
        f"{lingering.mode}: {errno.errorcode.get(lingering.bind_errno or 0)}"
    )


# --- spawn without cloudpickle -------------------------------------------------------------


def test_spawn_without_cloudpickle_names_the_extra(tmp_path: Path, processes: Processes) -> None:
    parent = subprocess.Popen(
        parent_command("spawn", "no-cloudpickle", tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.parents.append(parent)
    stdout, stderr = parent.communicate(timeout=DEADLINE)
    assert parent.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["error_type"] == "MissingDependencyError", report
    assert report["is_wove_error"] is True
    assert 'pip install "wove[spawn]"' in report["error"]
    assert report["child_pid"] is None
    assert not (tmp_path / "on_done.json").exists()


# --- the second fork fails -----------------------------------------------------------------

SECOND_FORK_FAILS = """
import errno, json, os, sys
from pathlib import Path

out = Path(sys.argv[1])
parent, real_fork = os.getpid(), os.fork


def fork():
    if os.getpid() != parent:  # in the intermediate child: as under a process limit
        raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
    return real_fork()


os.fork = fork

import wove
from wove import weave


def on_done(result):
    (out / "on_done.txt").write_text(str(os.getpid()))


report = {"pid": None}
try:
    with weave(background=True, fork=True, on_done=on_done) as w:

        @w.do
        def a():
            return 1

    report["pid"] = w.pid
except BaseException as error:
    report.update(
        error_type=type(error).__name__,
        is_os_error=isinstance(error, OSError),
        is_wove_error=isinstance(error, wove.WoveError),
        error=str(error),
    )
print(json.dumps(report))
"""


def test_a_failing_second_fork_raises_detach_error(tmp_path: Path, processes: Processes) -> None:
    script = tmp_path / "second_fork_fails.py"
    script.write_text(SECOND_FORK_FAILS, encoding="utf-8")
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.parents.append(parent)
    stdout, stderr = parent.communicate(timeout=DEADLINE)
    assert parent.returncode == 0, stderr
    report = json.loads(stdout)
    if report["pid"]:  # a child was started after all: stopped at teardown
        processes.children.append((report["pid"], str(tmp_path)))
    assert report["pid"] is None, f"the block returned pid {report['pid']} without an error"
    assert report["error_type"] == "DetachError", report
    assert report["is_os_error"] is True
    assert report["is_wove_error"] is True
    assert "BlockingIOError" in report["error"]
    assert os.strerror(errno.EAGAIN) in report["error"]
    assert not (tmp_path / "on_done.txt").exists()  # nothing ran


@pytest.mark.slow
def test_a_child_reads_a_sqlite_database_whose_descriptors_sqlite_kept(tmp_path: Path) -> None:
    """SQLite in WAL mode keeps closed connections' descriptors for reuse; the child's
    own connection reuses them, so regular files must stay the real file in the child."""
    import sqlite3

    from wove import weave

    path, out = tmp_path / "db.sqlite3", tmp_path / "seen.json"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("create table t(x)")
    setup.execute("insert into t values (1)")
    setup.commit()
    other = sqlite3.connect(path)
    other.execute("select * from t").fetchall()
    other.close()  # its descriptor stays open inside SQLite while `setup` is open
    try:
        with weave(background=True, fork=True) as w:

            @w.do
            def child() -> None:
                try:
                    seen: object = sqlite3.connect(path).execute("select x from t").fetchall()
                except sqlite3.Error as exc:
                    seen = repr(exc)
                out.write_text(json.dumps(seen))

        assert poll(lambda: out.exists() and out.read_text() != "")
        assert json.loads(out.read_text()) == [[1]]
    finally:
        setup.close()


# --- a child that never starts its work ----------------------------------------------------

NEVER_STARTS = """
import json, logging, os, sys, threading, time
from pathlib import Path

out = Path(sys.argv[1])
timeout = float(sys.argv[2])
logging.basicConfig(filename=str(out / "parent.log"), level=logging.INFO)

import wove
from wove import weave

wove.configure(fork_start_timeout=timeout)
held = threading.Lock()
holding, release = threading.Event(), threading.Event()


def hold():  # another thread of the server, holding a lock at the moment of the fork
    with held:
        holding.set()
        release.wait()


@wove.at_detached_child
def needs_the_lock():  # e.g. a hook that touches a driver's state: waits forever
    (out / "child.pid").write_text(str(os.getpid()))
    held.acquire()


done = threading.Event()
seen = {}


def on_done(result):
    seen.update(
        pid=os.getpid(),
        error_type=type(result.exception).__name__,
        error=str(result.exception),
        is_detach_error=isinstance(result.exception, wove.DetachError),
    )
    done.set()


threading.Thread(target=hold, daemon=True).start()
holding.wait()
started = time.monotonic()
with weave(background=True, fork=True, on_done=on_done) as w:

    @w.do
    def work():
        (out / "ran.txt").write_text("ran")

release.set()  # too late for the child: its copy of the lock stays held
seen["child_pid"] = w.pid
finished = done.wait(60)
seen.update(finished=finished, waited=time.monotonic() - started, parent=os.getpid())
print(json.dumps(seen))
"""


@pytest.mark.timeout(120)
def test_a_child_stuck_before_its_work_is_killed_and_reported(
    tmp_path: Path, processes: Processes
) -> None:
    """A lock another thread held at the fork stays held in the child forever; the
    child's hook waits for it, so the start watch kills the child after the timeout and
    calls on_done in the parent with a DetachError, and logs it."""
    script = tmp_path / "never_starts.py"
    script.write_text(NEVER_STARTS, encoding="utf-8")
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), "1.0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.parents.append(parent)
    stdout, stderr = parent.communicate(timeout=90)
    assert parent.returncode == 0, stderr
    report = json.loads(stdout)
    processes.children.append((report["child_pid"], str(tmp_path)))
    assert report["finished"] is True, report
    assert int((tmp_path / "child.pid").read_text()) == report["child_pid"]  # it got there
    assert poll(lambda: not is_running(report["child_pid"])), "the stuck child still runs"
    assert not (tmp_path / "ran.txt").exists()  # its work never ran
    assert report["pid"] == report["parent"]  # on_done ran here: the child never would
    assert report["is_detach_error"] is True, report
    assert f"pid {report['child_pid']}" in report["error"]
    assert "did not start its work within 1 s, so it was killed" in report["error"]
    log = (tmp_path / "parent.log").read_text()
    assert "DetachError: the detached child" in log
    assert "did not start its work" in log


DIES_BEFORE_STARTING = """
import json, os, sys, threading
from pathlib import Path

import wove
from wove import weave

out = Path(sys.argv[1])
wove.configure(fork_start_timeout=30.0)


@wove.at_detached_child
def crash():
    os._exit(3)


done, seen = threading.Event(), {}


def on_done(result):
    seen.update(pid=os.getpid(), error=str(result.exception))
    done.set()


with weave(background=True, fork=True, on_done=on_done) as w:

    @w.do
    def work():
        pass

seen.update(finished=done.wait(20), parent=os.getpid(), child_pid=w.pid)
print(json.dumps(seen))
"""


@pytest.mark.timeout(60)
def test_a_child_that_dies_before_its_work_is_reported_at_once(
    tmp_path: Path, processes: Processes
) -> None:
    script = tmp_path / "dies.py"
    script.write_text(DIES_BEFORE_STARTING, encoding="utf-8")
    parent = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert parent.returncode == 0, parent.stderr
    report = json.loads(parent.stdout)
    assert report["finished"] is True, report  # well before the 30 s timeout
    assert report["pid"] == report["parent"]
    assert f"pid {report['child_pid']}) exited before it started its work" in report["error"]


# --- the fork server -------------------------------------------------------------------

THROUGH_THE_FORK_SERVER = """
import json, os, sys, threading
from pathlib import Path

import wove
from wove import weave

out = Path(sys.argv[1])
server = wove.start_fork_server()  # one thread so far: the server copies no held lock
wove.configure(fork_start_timeout=1.0)
held = threading.Lock()
holding, release = threading.Event(), threading.Event()


def hold():  # as in the scenario above: held by another thread when the weave detaches
    with held:
        holding.set()
        release.wait()


@wove.at_detached_child
def needs_the_lock():  # free in the server, so free in the child it forks
    held.acquire()


def on_done(result):
    (out / "on_done.json").write_text(
        json.dumps({"pid": os.getpid(), "value": result.work, "error": repr(result.exception)})
    )


threading.Thread(target=hold, daemon=True).start()
holding.wait()
with weave(background=True, fork=True, on_done=on_done) as w:

    @w.do
    def work():
        return os.getpid()

refused = None
try:
    wove.start_fork_server()
except wove.WeaveStateError as error:
    refused = str(error)
release.set()
print(json.dumps({"parent": os.getpid(), "server": server, "child": w.pid, "refused": refused}))
wove.stop_fork_server()
"""


@pytest.mark.timeout(60)
def test_a_fork_server_forks_children_that_copy_no_lock_held_by_another_thread(
    tmp_path: Path, processes: Processes
) -> None:
    script = tmp_path / "through_the_server.py"
    script.write_text(THROUGH_THE_FORK_SERVER, encoding="utf-8")
    parent = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert parent.returncode == 0, parent.stderr
    report = json.loads(parent.stdout)
    processes.children.append((report["child"], str(tmp_path)))
    assert poll(lambda: (tmp_path / "on_done.json").exists()), "the work never ran"
    done = json.loads((tmp_path / "on_done.json").read_text())
    assert done == {"pid": report["child"], "value": report["child"], "error": "None"}
    assert report["child"] not in (report["parent"], report["server"])
    assert "already runs" in report["refused"]
    assert poll(lambda: not is_running(report["server"])), "stop_fork_server left it running"


STARTED_LATE = """
import json, threading, wove

stop = threading.Event()
threading.Thread(target=stop.wait, name="busy", daemon=True).start()
try:
    wove.start_fork_server()
    print(json.dumps({"error": None}))
except wove.WeaveStateError as error:
    print(json.dumps({"error": str(error)}))
stop.set()
"""


def test_a_fork_server_is_refused_once_another_thread_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-c", STARTED_LATE], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error is not None
    assert "only its main thread" in error
    assert "['busy']" in error


FORKED_AFTER_THE_SERVER = """
import json, os, sys, time
import wove
from wove.lowlevel import running_fork_server

server = wove.start_fork_server()
read_end, write_end = os.pipe()
worker = os.fork()  # as gunicorn forks a worker from a master that started a server
if worker == 0:
    os.write(write_end, json.dumps({"server_here": repr(running_fork_server())}).encode())
    os.close(write_end)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # let the test read the parent's output to its end
    os.dup2(devnull, 2)
    time.sleep(30)  # outlives the process that started the server
    os._exit(0)
os.close(write_end)
seen = json.loads(os.read(read_end, 4096))
print(json.dumps({"server": server, "worker": worker, **seen}), flush=True)
os._exit(0)  # the server's owner ends without stop_fork_server()
"""


@pytest.mark.timeout(60)
def test_a_fork_server_ends_with_its_owner_not_with_processes_forked_from_it() -> None:
    parent = subprocess.run(
        [sys.executable, "-c", FORKED_AFTER_THE_SERVER],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert parent.returncode == 0, parent.stderr
    report = json.loads(parent.stdout)
    try:
        assert report["server_here"] == "None"  # a forked process starts its own
        assert poll(lambda: not is_running(report["server"])), "the server outlived its owner"
        assert is_running(report["worker"])  # while the process forked from it lives on
    finally:
        try:
            os.kill(report["worker"], signal.SIGKILL)
        except ProcessLookupError:
            pass


SERVER_KILLED = """
import json, os, signal, sys
from pathlib import Path
import wove
from wove import weave

out = Path(sys.argv[1])
first = wove.start_fork_server()
os.kill(first, signal.SIGKILL)
report = {"first": first}
try:
    with weave(background=True, fork=True) as w:

        @w.do
        def lost():
            return 1

    report["detach"] = None
except wove.DetachError as error:
    report["detach"] = str(error)
report["first_state"] = (
    open(f"/proc/{first}/stat").read().split()[2] if os.path.exists(f"/proc/{first}/stat")
    else "reaped"
)
report["second"] = wove.start_fork_server()  # the dead one is replaced, not "already runs"


def on_done(result):
    (out / "done.json").write_text(json.dumps({"value": result.work}))


with weave(background=True, fork=True, on_done=on_done) as w:

    @w.do
    def work():
        return "through the second server"

report["child"] = w.pid
wove.stop_fork_server()
print(json.dumps(report))
"""


@pytest.mark.timeout(60)
def test_a_killed_fork_server_is_reaped_and_can_be_started_again(
    tmp_path: Path, processes: Processes
) -> None:
    parent = subprocess.run(
        [sys.executable, "-c", SERVER_KILLED, str(tmp_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert parent.returncode == 0, parent.stderr
    report = json.loads(parent.stdout)
    processes.children.append((report["child"], str(tmp_path)))
    assert "is gone" in report["detach"]
    assert "wove.stop_fork_server()" in report["detach"]
    assert report["first_state"] == "reaped"  # no zombie left behind
    assert report["second"] != report["first"]
    assert poll(lambda: (tmp_path / "done.json").exists()), "the second server ran nothing"
    assert json.loads((tmp_path / "done.json").read_text()) == {
        "value": "through the second server"
    }
    assert poll(lambda: not is_running(report["second"]))


@pytest.mark.parametrize("bad", [0, -1.0, True, "5", float("nan")])
def test_a_bad_fork_start_timeout_is_refused_with_what_was_expected(bad: object) -> None:
    import wove

    before = wove.settings().fork_start_timeout
    with pytest.raises(wove.InvalidOptionError, match="fork_start_timeout must be a number"):
        wove.configure(fork_start_timeout=bad)  # type: ignore[arg-type]
    assert wove.settings().fork_start_timeout == before
    wove.configure(fork_start_timeout=None)
    try:
        assert wove.settings().fork_start_timeout is None
    finally:
        wove.configure(fork_start_timeout=before)
