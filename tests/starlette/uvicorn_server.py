"""A real uvicorn process serving ``starlette_testapp`` on a free port of 127.0.0.1,
with the middleware's options from the test; stopped by its PID (SIGTERM, so the
lifespan's shutdown runs), its log shown when a test fails."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass
class Served:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def uvicorn_server(log_dir: Path, **options: Any) -> Iterator[Served]:
    port = free_port()
    log_path = log_dir / f"uvicorn-{port}.log"
    env = {**os.environ, "WOVE_TEST_OPTIONS": json.dumps(options)}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "starlette_testapp:served",
        "--app-dir",
        str(HERE),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "info",
        "--no-access-log",
        "--lifespan",
        "on",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    served = Served(port, process, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"uvicorn exited:\n{served.log()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"uvicorn never listened:\n{served.log()}"
                time.sleep(0.05)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
