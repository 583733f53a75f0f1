"""A throwaway Redis server for the Celery tests (no pytest here).

``start_redis(directory)`` runs the local ``redis-server`` (``make redis`` installs the
Debian ``redis-server`` package when it is missing) in the foreground on 127.0.0.1 and a
free port, without persistence, logging to ``directory/redis.log``. It is ready once it
answers PING and ``INFO server`` names its process (not another server that took the
port first); ``stop()`` ends it by its PID. A system Redis on 6379 (which the Debian
package may start) is never used.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class RedisUnavailable(RuntimeError):
    """No ``redis-server`` program here."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def find_redis_server() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if found is None:
        raise RedisUnavailable(
            "redis-server was not found on PATH: run `make redis` (or "
            "`apt-get install redis-server`) to install it"
        )
    return found


@dataclass
class RedisServer:
    """A running server: ``url`` names its database 0."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: str
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def log_text(self) -> str:
        return _read(self.log_path)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def ping(self, timeout: float = 1.0) -> bool:
        """Does the server answer ``PING`` with ``+PONG``?"""
        try:
            return _command(self.port, b"PING", timeout).startswith(b"+PONG")
        except OSError:
            return False

    def serving_pid(self, timeout: float = 1.0) -> int | None:
        """The ``process_id`` of the Redis answering on ``port`` (``INFO server``): ours,
        or another that took the port first, or None if none answers."""
        try:
            info = _command(self.port, b"INFO server", timeout)
        except OSError:
            return None
        found = re.search(rb"^process_id:(\d+)", info, re.MULTILINE)
        return int(found.group(1)) if found else None

    def stop(self) -> None:
        """SIGTERM, up to 10 s to exit, then SIGKILL; the process is reaped. Stopping a
        stopped server does nothing."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    self.process.kill()
                except ProcessLookupError:
                    pass
        self.process.wait(STOP_TIMEOUT)


def start_redis(directory: str | os.PathLike[str], port: int | None = None) -> RedisServer:
    """Start ``redis-server`` on a free port of 127.0.0.1 (or on ``port``: a server
    restarted where clients expect it), its files in ``directory``; the caller must
    ``stop()`` it."""
    program = find_redis_server()
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    log_path = os.path.join(directory, "redis.log")
    chosen = port
    for attempt in range(5):
        port = chosen or free_port()
        command = [
            program,
            *("--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", directory),
            *("--daemonize", "no", "--protected-mode", "yes", "--logfile", log_path),
        ]
        # Before it opens its log file (a bad argument), redis-server writes to stderr.
        with open(os.path.join(directory, "redis.out"), "ab") as out:
            process = subprocess.Popen(
                command,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = RedisServer(port, process, log_path)
        try:
            if _wait_until_ready(server, START_TIMEOUT):
                return server
        except BaseException:
            server.stop()
            raise
        exited = process.poll()
        server.stop()
        # Another process may have taken the port between free_port() and the bind.
        mine = f"{server.pid}:"
        lines = [line for line in server.log_text().splitlines() if line.startswith(mine)]
        if (
            chosen is None
            and attempt < 4
            and any("Address already in use" in line for line in lines)
        ):
            continue
        why = (
            f"exited with {exited}"
            if exited is not None
            else f"did not answer PING within {START_TIMEOUT:.0f} s"
        )
        raise RuntimeError(
            f"redis-server (pid {server.pid}, port {port}) {why}; "
            f"the end of {log_path}:\n{server.log_tail()}\n"
            f"its output:\n{_read(os.path.join(directory, 'redis.out'))[-4000:]}"
        )
    raise AssertionError("unreachable")


def _wait_until_ready(server: RedisServer, seconds: float) -> bool:
    """True once the server answers PING, and is the one started (its process id; not
    another server that took the port first); False if it exited or the time ran out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        if server.ping(timeout=0.5) and server.serving_pid(timeout=0.5) == server.pid:
            return True
        time.sleep(0.02)
    return False


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except OSError as exc:
        return f"({exc})"


def _command(port: int, command: bytes, timeout: float) -> bytes:
    """Send one inline command and read its whole reply (a status line or a bulk
    string), without a client library."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(command + b"\r\n")
        reply = b""
        while b"\r\n" not in reply:
            chunk = conn.recv(4096)
            if not chunk:
                return reply
            reply += chunk
        header, _, body = reply.partition(b"\r\n")
        if not header.startswith(b"$") or int(header[1:]) < 0:
            return reply
        size = int(header[1:]) + 2  # the data and its closing CRLF
        while len(body) < size:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return body[: size - 2]
