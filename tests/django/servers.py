"""Real servers running the test project: gunicorn (WSGI, gthread) and uvicorn (ASGI).

Each listens on a free port of 127.0.0.1, logs to a file (shown when a test fails), and
is stopped by PID together with its descendants. A tiny HTTP client (``http.client``,
one connection per request) reads whole responses and notes when the last byte came.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgserver import PgServer, free_port

PROJECT_DIR = Path(__file__).resolve().parent  # holds manage.py and wove_testproject


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    received_at: float  # time.monotonic() once the whole body was read

    def json(self) -> Any:
        return json.loads(self.body)

    def cookies(self) -> dict[str, str]:
        jar = {}
        for value in self.headers.get_all("Set-Cookie") or ():
            name, _, rest = value.partition("=")
            jar[name.strip()] = rest.split(";", 1)[0]
        return jar


@dataclass
class Server:
    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    tmpdir: Path | None = None  # its TMPDIR, when Servers started it
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Reply:
        sent = dict(headers or {})
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        client = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            client.request(method, path, body=body, headers=sent)
            response = client.getresponse()
            data = response.read()
            return Reply(response.status, response.headers, data, time.monotonic())
        finally:
            client.close()

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def ok_json(self, path: str) -> Any:
        reply = self.get(path)
        assert reply.status == 200, f"GET {path}: {reply.status}\n{reply.body[:2000]!r}"
        return reply.json()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"

    def worker_pids(self) -> list[int]:
        """The processes that handle requests: gunicorn's workers, or uvicorn itself."""
        if self.kind == "uvicorn":
            return [self.process.pid]
        return children(self.process.pid)

    def stop(self) -> None:
        """SIGTERM the server (a graceful stop), SIGKILL whatever of it is left after a
        grace period. Stopping a stopped server does nothing."""
        if self.process.returncode is not None:
            return
        family = [self.process.pid, *descendants(self.process.pid)]
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for pid in family:
            if state(pid) not in (None, "Z"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.process.wait(10)


def server_env(database_url: str, **settings: str) -> dict[str, str]:
    """The environment for the test project: this one, less any WOVE_TEST_ setting, plus
    the database and ``settings`` (``WOVE_TEST_DB_POOL="1"`` and so on)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOVE_TEST_")}
    env.pop("PYTEST_CURRENT_TEST", None)
    env.setdefault("DJANGO_SETTINGS_MODULE", "wove_testproject.settings")
    env["WOVE_TEST_DATABASE_URL"] = database_url
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def start_gunicorn(
    log_dir: Path, env: dict[str, str], *, threads: int = 4, workers: int = 1
) -> Server:
    port = free_port()
    command = [
        *(sys.executable, "-m", "gunicorn", "wove_testproject.wsgi:application"),
        *("--bind", f"127.0.0.1:{port}", "--worker-class", "gthread"),
        *("--threads", str(threads), "--workers", str(workers)),
        *("--timeout", "60", "--graceful-timeout", "5", "--no-control-socket"),
        *("--access-logfile", "-", "--error-logfile", "-", "--log-level", "info"),
    ]
    return _start("gunicorn", command, port, log_dir, env)


def start_uvicorn(log_dir: Path, env: dict[str, str]) -> Server:
    port = free_port()
    command = [
        *(sys.executable, "-m", "uvicorn", "wove_testproject.asgi:application"),
        *("--host", "127.0.0.1", "--port", str(port), "--lifespan", "off"),
        *("--log-level", "info", "--timeout-graceful-shutdown", "5"),
    ]
    return _start("uvicorn", command, port, log_dir, env)


def start_runserver(log_dir: Path, env: dict[str, str]) -> Server:
    port = free_port()
    command = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    return _start("runserver", command, port, log_dir, env)


def _start(kind: str, command: list[str], port: int, log_dir: Path, env: dict[str, str]) -> Server:
    log_path = log_dir / f"{kind}-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(kind, port, process, log_path)
    try:
        _wait_until_ready(server, 60.0)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_ready(server: Server, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.kind} exited with {server.process.returncode} before it served "
                f"a request:\n{server.log()}"
            )
        try:
            if server.get("/ping/", timeout=5).status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.kind} not ready after {seconds} s:\n{server.log()}")
        time.sleep(0.1)


# --- the test project's database and users ---------------------------------------------


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the test project's ``manage.py`` with ``env``; what it printed, or a failure."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def migrate(database_url: str) -> None:
    """Apply the test project's migrations to the database at ``database_url``."""
    manage(server_env(database_url), "migrate", "--noinput", "-v", "0")


def create_user(database_url: str, username: str, password: str, *, staff: bool) -> None:
    """A user in that database, made by the project's own ORM (``manage.py shell``)."""
    code = (
        "from django.contrib.auth.models import User; "
        f"User.objects.create_user({username!r}, password={password!r}, is_staff={staff!r})"
    )
    manage(server_env(database_url), "shell", "-c", code)


def log_in(server: Server, username: str, password: str) -> None:
    """Log ``server``'s client in (POST /login/); later requests send the session cookie."""
    reply = server.request("POST", "/login/", form={"username": username, "password": password})
    assert reply.status == 200, reply.body
    server.cookies.update(reply.cookies())
    assert "sessionid" in server.cookies


class Servers:
    """Starts servers of the test project for one test, each on a fresh database."""

    def __init__(self, postgres: PgServer, fresh_database: Callable[[], str], log_dir: Path):
        self.postgres = postgres
        self._fresh_database = fresh_database
        self.log_dir = log_dir
        self.started: list[Server] = []
        self.database: dict[int, str] = {}  # port: database name
        self._tmpdirs: list[Path] = []

    def start(self, kind: str, *, threads: int = 4, workers: int = 1, **settings: str) -> Server:
        """``kind`` is "gunicorn" or "uvicorn"; ``settings`` become environment variables
        (``WOVE_TEST_DB_POOL="1"``, ``DJANGO_SETTINGS_MODULE=...``)."""
        name = self._fresh_database()
        # A short private TMPDIR (Unix socket paths are short), so nothing the server
        # leaves in it goes unnoticed.
        tmpdir = Path(tempfile.mkdtemp(prefix="wove-srv-"))
        self._tmpdirs.append(tmpdir)
        env = server_env(self.postgres.url_for(name), TMPDIR=str(tmpdir), **settings)
        if kind == "gunicorn":
            server = start_gunicorn(self.log_dir, env, threads=threads, workers=workers)
        elif kind == "uvicorn":
            server = start_uvicorn(self.log_dir, env)
        else:
            raise ValueError(kind)
        server.tmpdir = tmpdir
        self.started.append(server)
        self.database[server.port] = name
        return server

    def close(self) -> None:
        """Stop every server started, and remove their TMPDIRs."""
        try:
            for server in self.started:
                server.stop()
        finally:
            for tmpdir in self._tmpdirs:
                shutil.rmtree(tmpdir, ignore_errors=True)

    def url(self, server: Server) -> str:
        return self.postgres.url_for(self.database[server.port])

    def backend_pids(self, server: Server, probe: Any = None) -> set[int]:
        """The backends of the client connections open to ``server``'s database (the
        probe's own not included; ``probe`` is a connection to reuse, else one is made)."""
        if probe is None:
            with self.postgres.connect() as probe:
                return self.backend_pids(server, probe)
        rows = probe.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            (self.database[server.port],),
        ).fetchall()
        return {int(row[0]) for row in rows}

    def backends(self, server: Server, probe: Any = None) -> int:
        """How many client connections are open to ``server``'s database."""
        return len(self.backend_pids(server, probe))


# --- processes ---------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) from /proc, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def state(pid: int) -> str | None:
    """The process's state letter (``"Z"`` for a zombie), or None if it is gone."""
    found = _stat(pid)
    return None if found is None else found[0]


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (zombies included), from every process's parent pid."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None and stat[1] == pid:
                found.append(int(name))
    return sorted(found)


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    frontier = [pid]
    while frontier:
        below = children(frontier.pop())
        found += below
        frontier += below
    return found


def wait_until_gone(pid: int, seconds: float) -> bool:
    """Wait for ``pid`` to end (or be a zombie); False if it still runs after ``seconds``."""
    deadline = time.monotonic() + seconds
    while state(pid) not in (None, "Z"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
