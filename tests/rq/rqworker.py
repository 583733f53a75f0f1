"""A real ``rq worker`` process for the RQ tests (no pytest here).

``start_rq_worker(url, queue, directory)`` runs ``rq worker -c rq_wove_settings`` on
``queue`` from this directory (first on its PYTHONPATH, then where this process imports
``wove`` from), as the leader of a new process group (its work horses, forked per job,
get sessions of their own), its output in a log file under ``directory``. It is ready once it has
registered itself in Redis. ``stop()`` signals the group: SIGTERM, then SIGKILL after
15 s; ``kill()`` sends SIGKILL to the whole group at once (a lost machine).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
WOVE_ROOT = Path(__import__("wove").__file__).resolve().parent.parent
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


@dataclass
class RQWorker:
    process: subprocess.Popen[bytes]
    name: str
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no worker log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the worker's group at once (a work horse has a session of its own)."""
        _killpg(self.pid, signal.SIGKILL)
        self.stop()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            _killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        _killpg(self.pid, signal.SIGKILL)  # whatever of the group is left
        self.process.wait(STOP_TIMEOUT)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start_rq_worker(
    url: str,
    queue: str,
    directory: Path,
    *,
    settings: str = "rq_wove_settings",
    paths: tuple[str, ...] = (),
    logging_level: str = "INFO",
    worker_class: str | None = None,
) -> RQWorker:
    """Start a worker on ``queue`` loading the ``settings`` module (importable from
    here or ``paths``), and wait until it is registered; ``stop()`` it."""
    from redis import Redis
    from rq import Worker

    directory.mkdir(parents=True, exist_ok=True)
    name = f"wove-test-{secrets.token_hex(4)}"
    log_path = directory / f"{name}.log"
    rq_program = Path(sys.executable).parent / "rq"
    command = [
        str(rq_program),
        *("worker", "-c", settings, "-u", url, "-n", name),
        *("--logging_level", logging_level, queue),
    ]
    if worker_class is not None:
        command += ["--worker-class", worker_class]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), *paths, str(WOVE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    env["WOVE_TEST_RQ_URL"] = url
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = RQWorker(process, name, log_path)
    redis = Redis.from_url(url)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not any(w.name == name for w in Worker.all(connection=redis)):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"rq worker {name} did not start (exit {process.poll()}):\n{worker.log_tail()}"
                )
            time.sleep(0.1)
    except BaseException:
        worker.stop()
        raise
    finally:
        redis.close()
    return worker
