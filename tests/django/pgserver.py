"""A throwaway PostgreSQL server for tests and benchmarks (no pytest here).

``start_postgres(directory)`` runs ``initdb`` and ``pg_ctl`` from the local PostgreSQL
installation (``make unit`` installs the Debian ``postgresql`` package when it is
missing), on 127.0.0.1 and a free port, with trust authentication and durability off
(``fsync=off``: the data is thrown away). PostgreSQL refuses to run as root, so as root
the cluster belongs to the ``postgres`` user (or ``nobody``) and lives in a fresh
directory that user can reach.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

ROLE = "wove"
DATABASE = "wove"
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (``initdb``, ``pg_ctl``, ``postgres``)."""


def find_bindir() -> str:
    """The directory with ``initdb`` and ``pg_ctl``: PATH, ``pg_config --bindir``, or the
    newest ``/usr/lib/postgresql/*/bin`` (Debian keeps them off PATH)."""
    candidates: list[str] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(os.path.dirname(os.path.realpath(on_path)))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30
            )
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: int(path.split("/")[-2]) if path.split("/")[-2].isdigit() else 0,
        reverse=True,
    )
    for bindir in candidates:
        if all(os.access(os.path.join(bindir, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return bindir
    raise PostgresUnavailable(
        "PostgreSQL's server programs (initdb, pg_ctl) were not found on PATH, through "
        "pg_config, or in /usr/lib/postgresql/*/bin; install them (Debian: "
        "apt-get install postgresql), which `make unit` does when they are missing"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PgServer:
    """A running server: ``url`` names its database, owned by a superuser without password."""

    port: int
    data_dir: str
    bindir: str
    user: str | None  # the OS user running it (None: this process's user)
    database: str = DATABASE
    role: str = ROLE
    pid: int | None = None
    _own_dir: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgres://{self.role}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str | None = None, **kwargs: Any) -> Any:
        """A psycopg connection (autocommit unless told otherwise) to ``database``."""
        import psycopg

        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 30)
        return psycopg.connect(self.url_for(database or self.database), **kwargs)

    @property
    def log_path(self) -> str:
        return os.path.join(self.data_dir, "server.log")

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except OSError as exc:
            return f"(no server log: {exc})"

    def stop(self) -> None:
        """Stop at once (``pg_ctl stop -m immediate``), kill the postmaster if it lingers,
        and remove the cluster's directory if it was made here."""
        if self.pid is not None:
            try:
                _run(
                    [
                        *(os.path.join(self.bindir, "pg_ctl"), "stop", "-D", self.data_dir),
                        *("-m", "immediate", "-w", "-t", "20"),
                    ],
                    self.user,
                    timeout=30,
                )
            except (OSError, subprocess.SubprocessError):
                pass
            _kill_and_wait(self.pid, 10.0)
            self.pid = None
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None


def start_postgres(directory: str) -> PgServer:
    """Create a cluster under ``directory``, start it on a free port of 127.0.0.1, and
    create the database ``wove``; the caller must ``stop()`` it."""
    bindir = find_bindir()
    user = _server_user()
    if user is not None and not _reachable_by(directory, user):
        directory = tempfile.mkdtemp(prefix="wove-pg-")  # in /tmp, which anyone can enter
    else:
        directory = tempfile.mkdtemp(prefix="pg-", dir=directory)
    data_dir = os.path.join(directory, "data")
    socket_dir = os.path.join(directory, "sock")
    os.mkdir(socket_dir)
    if user is not None:
        record = pwd.getpwnam(user)
        for path in (directory, socket_dir):
            os.chown(path, record.pw_uid, record.pw_gid)
    server = PgServer(port=0, data_dir=data_dir, bindir=bindir, user=user, _own_dir=directory)
    try:
        _run(
            [
                *(os.path.join(bindir, "initdb"), "-D", data_dir, "-U", ROLE, "--auth=trust"),
                *("--encoding=UTF8", "--locale=C", "--no-sync"),
            ],
            user,
            timeout=120,
        )
        settings = {**_SETTINGS, "unix_socket_directories": f"'{socket_dir}'"}
        for attempt in range(5):
            server.port = free_port()
            with open(os.path.join(data_dir, "postgresql.auto.conf"), "a") as conf:
                for key, value in {**settings, "port": str(server.port)}.items():
                    conf.write(f"{key} = {value}\n")
            started = _run(
                [
                    *(os.path.join(bindir, "pg_ctl"), "start", "-D", data_dir),
                    *("-l", server.log_path, "-w", "-t", "60"),
                ],
                user,
                timeout=90,
                check=False,
            )
            if started.returncode == 0:
                break
            if attempt == 4 or "could not bind" not in server.log():
                raise RuntimeError(
                    f"pg_ctl start failed ({started.returncode}): {started.stdout}\n{server.log()}"
                )
        server.pid = _postmaster_pid(data_dir)
        with server.connect("postgres") as admin:
            admin.execute(f'CREATE DATABASE "{DATABASE}"')
    except BaseException:
        server.stop()
        raise
    return server


def _server_user() -> str | None:
    """None when not root; else a user PostgreSQL accepts (it refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise PostgresUnavailable("running as root, and there is no postgres or nobody user")


def _reachable_by(directory: str, user: str) -> bool:
    """Can ``user`` enter ``directory`` (pytest's base temp dir is root's, mode 0700)?"""
    probe = subprocess.run(
        ["test", "-x", directory, "-a", "-r", directory],
        **_as_user(user),
        capture_output=True,
        timeout=30,
        check=False,
    )
    return probe.returncode == 0


def _as_user(user: str | None) -> dict[str, Any]:
    if user is None:
        return {}
    record = pwd.getpwnam(user)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/",
        "USER": user,
        "LOGNAME": user,
        "LANG": "C.UTF-8",
    }
    return {
        "user": record.pw_uid,
        "group": record.pw_gid,
        "extra_groups": [],
        "env": env,
        "cwd": "/",
    }


def _run(
    command: list[str], user: str | None, *, timeout: float, check: bool = True
) -> subprocess.CompletedProcess[str]:
    # pg_ctl start leaves the postmaster holding stdout if it were a pipe: give it a file.
    with tempfile.TemporaryFile("w+") as output:
        options = _as_user(user)
        options.setdefault("env", {**os.environ, "LANG": "C.UTF-8"})
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
            **options,
        )
        output.seek(0)
        text = output.read()
    result = subprocess.CompletedProcess(command, done.returncode, text, "")
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{text}")
    return result


def _postmaster_pid(data_dir: str) -> int:
    with open(os.path.join(data_dir, "postmaster.pid")) as pidfile:
        return int(pidfile.readline())


def _kill_and_wait(pid: int, seconds: float) -> None:
    """SIGKILL ``pid`` if it is still alive after ``seconds`` (a server is not our child),
    then wait as long again for it to go."""
    killed = False
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            if killed:
                return
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            killed = True
            deadline = time.monotonic() + seconds
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
