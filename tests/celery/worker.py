"""A real ``celery worker`` process for the Celery tests (no pytest here).

``start_worker("celery_testapp", broker_url=..., env_extra={}, directory=...)`` runs
``python -m celery -A celery_testapp worker`` from this directory (which is also put first
on its PYTHONPATH, so the modules here are importable in the worker, followed by where
this process imports ``wove`` from, so the worker runs the same Wove), with
``WOVE_TEST_REDIS_URL`` set to the broker, its output in a log file under ``directory``.

The worker is the leader of a new session and process group (``start_new_session``), and
its prefork pool's children (billiard forks them) stay in that group, so ``stop()``
signals the whole group at once with ``os.killpg``: SIGTERM (a warm shutdown for the
parent; the pool's children die of it, so a task running then is lost with a
WorkerLostError in the log), then SIGKILL for whatever is left after 15 s.

Readiness is two checks, both within 60 s: the worker logs ``<name> ready.`` (its
consumer's event loop has started, with every bootstep, the task queues and the
remote-control mailbox among them), and then it answers a remote-control ``ping`` sent
to its node name over the broker (so it really consumes messages from this broker).
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent  # tests/celery: celery_testapp and the helpers
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
_READY = re.compile(r"(\S+@\S+) ready\.")


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    name: str  # the node name, "wove-test-<hex>@<host>" (the destination of control calls)
    log_path: Path
    broker_url: str
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        """The worker's parent process; also the id of its process group."""
        return self.process.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no worker log: {exc})"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def group_pids(self) -> list[int]:
        """The live processes of the worker's process group (the parent, the pool)."""
        return _group_members(self.pid)

    def stop(self) -> None:
        """SIGTERM the process group, wait up to 15 s for the parent, then SIGKILL the
        group; the parent is reaped (the pool's children are the parent's to reap, or
        init's). Stopping a stopped worker does nothing."""
        if self._stopped:
            return
        self._stopped = True
        pgid = self.pid  # start_new_session: the worker leads its own group
        if self.process.poll() is None:
            _killpg(pgid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        # Anything of the group still alive (the parent stuck, or an orphaned pool child).
        if self.process.poll() is None or _group_members(pgid):
            _killpg(pgid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)


def start_worker(
    app_module: str,
    *,
    broker_url: str,
    env_extra: Mapping[str, str],
    directory: str | os.PathLike[str],
    concurrency: int = 4,
    pool: str = "prefork",
    queues: Sequence[str] | None = None,
    loglevel: str = "INFO",
    cwd: str | os.PathLike[str] = HERE,
    label_prefix: str = "wove-test",
) -> Worker:
    """Start a worker of ``app_module`` (a module importable from ``cwd``, by default
    tests/celery) and wait until it is ready; the caller must ``stop()`` it. Below
    ``loglevel="INFO"`` it logs no "ready." line, and only the ping says it is ready."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    label = f"{label_prefix}-{secrets.token_hex(4)}"
    name = f"{label}@{socket.gethostname()}"  # what celery makes of "%h"
    log_path = directory / f"{label}.log"
    command = [
        *(sys.executable, "-m", "celery", "-A", app_module, "worker"),
        *(f"--loglevel={loglevel}", f"--concurrency={concurrency}", f"--pool={pool}"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        *("-n", f"{label}@%h"),
    ]
    if queues:
        command += ["-Q", ",".join(queues)]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(cwd), *_wove_root(), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    env["WOVE_TEST_REDIS_URL"] = broker_url
    env.update(env_extra)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(process, name, log_path, broker_url)
    try:
        _wait_until_ready(worker, START_TIMEOUT, logs_ready=loglevel in ("DEBUG", "INFO"))
    except BaseException:
        worker.stop()
        raise
    return worker


def _wait_until_ready(worker: Worker, seconds: float, logs_ready: bool) -> None:
    deadline = time.monotonic() + seconds

    def fail(why: str) -> RuntimeError:
        return RuntimeError(
            f"celery worker {worker.name} (pid {worker.pid}) {why}; "
            f"the end of {worker.log_path}:\n{worker.log_tail()}"
        )

    while logs_ready:  # 1. "<name> ready." in its log
        if worker.process.poll() is not None:
            raise fail(f"exited with {worker.process.returncode} before it was ready")
        found = _READY.search(worker.log_text())
        if found:
            worker.name = found.group(1)  # the name as the worker spelled it
            break
        if time.monotonic() > deadline:
            raise fail(f"did not log 'ready.' within {seconds:.0f} s")
        time.sleep(0.05)

    from celery import Celery  # 2. it answers a ping over the broker

    probe = Celery("wove-test-probe", broker=worker.broker_url, set_as_current=False)
    try:
        while True:
            if worker.process.poll() is not None:
                raise fail(f"exited with {worker.process.returncode} after it was ready")
            if probe.control.ping(destination=[worker.name], timeout=0.5):
                return
            if time.monotonic() > deadline:
                raise fail(f"did not answer a ping within {seconds:.0f} s")
    finally:
        probe.close()


def _wove_root() -> list[str]:
    """The directory this process imports ``wove`` from, unless it is the environment's
    site-packages (where the worker finds it anyway): ``python -m pytest`` run from the
    repository imports the source tree, ``.venv/bin/pytest`` the installed package, and
    the worker must run the same Wove as its client."""
    spec = importlib.util.find_spec("wove")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations))).resolve().parent
    installed = {Path(sysconfig.get_path(key)).resolve() for key in ("purelib", "platlib")}
    return [] if root in installed else [str(root)]


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are alive (not zombies), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)
