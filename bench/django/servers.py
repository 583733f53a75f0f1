"""The benchmark project behind a real server: gunicorn (gthread) or uvicorn on
127.0.0.1, hit by a plain keep-alive HTTP client, one request at a time.

Each server is stopped by PID (SIGTERM to gunicorn's master or to uvicorn, then SIGKILL
to whatever of it is left), never by name.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Client:
    """One keep-alive connection to 127.0.0.1:``port``; ``get`` returns the body."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> bytes:
        for attempt in range(2):
            try:
                self._connection.request("GET", path)
                response = self._connection.getresponse()
                body = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionError):
                # The server closed an idle keep-alive connection: once more, on a new one.
                self._connection.close()
                if attempt:
                    raise
        if response.status != 200:
            raise AssertionError(f"GET {path}: {response.status} {body[:500]!r}")
        return body

    def close(self) -> None:
        self._connection.close()


class Gunicorn:
    """``gunicorn bench.django.wsgi``: one gthread worker, ``threads`` request threads."""

    kind = "gunicorn"

    def __init__(self, env: dict[str, str], *, threads: int = 4) -> None:
        self.port = free_port()
        command = [
            *(sys.executable, "-m", "gunicorn", "bench.django.wsgi:application"),
            *("--bind", f"127.0.0.1:{self.port}", "--worker-class", "gthread"),
            *("--workers", "1", "--threads", str(threads), "--keep-alive", "60"),
            *("--timeout", "60", "--graceful-timeout", "5", "--no-control-socket"),
            *("--error-logfile", "-", "--log-level", "warning"),
        ]
        self._start(command, env)

    def _start(self, command: list[str], env: dict[str, str]) -> None:
        self._log = tempfile.NamedTemporaryFile(prefix=f"wove-bench-{self.kind}-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "bench.django.settings", **env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_until_ready(60.0)
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _wait_until_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5):
                    pass
                client = Client(self.port)
                try:
                    client.get("/ping/")
                    return
                finally:
                    client.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} not ready after {seconds} s:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM the master (a graceful stop, which reaps its worker); if it is still
        there after 10 s, SIGKILL its children, then it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                for pid in _children(self.process.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                self.process.kill()
                self.process.wait(10)
        self._log.close()


class Uvicorn(Gunicorn):
    """``uvicorn bench.django.asgi``: one process, its event loop."""

    kind = "uvicorn"

    def __init__(self, env: dict[str, str]) -> None:  # (no request threads to choose)
        self.port = free_port()
        command = [
            *(sys.executable, "-m", "uvicorn", "bench.django.asgi:application"),
            *("--host", "127.0.0.1", "--port", str(self.port), "--lifespan", "off"),
            *("--log-level", "warning", "--timeout-keep-alive", "60"),
            *("--timeout-graceful-shutdown", "5"),
        ]
        self._start(command, env)


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from each process's parent PID in /proc."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(name))
    return found
