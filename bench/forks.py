"""``python -m bench.forks``: fork detached work out of a busy threaded server, and count
the children that hung.

``detach(mode="fork")`` forks a gunicorn ``gthread`` worker while its other threads run:
a lock one of them holds at that moment (logging's, stdout's, the database driver's)
stays held in the child, with no thread to release it. This runs ``--forks`` (1,000)
forked detaches against one worker with ``--threads`` request threads while
``--noise`` clients keep its other threads (request threads and Wove's pool threads)
logging, printing and querying, then waits for every child and reports:

- **done**: the child ran its work to the end (it logs, prints and queries too);
- **killed**: it never started its work, so the start watch killed it after
  ``--start-timeout`` seconds (``WOVE["FORK_START_TIMEOUT"]``): a hang before its work;
- **hung**: it started but had not finished ``--wait`` seconds after the last fork (a
  hang inside the work); these are killed here, by the pid each wrote;
- **lost**: neither started nor reported killed (should be 0).

``--fork-server`` starts :func:`wove.start_fork_server` in the worker before its first
request (``BENCH_FORK_SERVER=1``, see ``bench/django/wsgi.py``), so every child is forked
by a process that never had a second thread.

The database is a throwaway PostgreSQL (``tests/django/pgserver.py``) through Django's
connection pool, or with ``--sqlite`` (or no PostgreSQL installed) a SQLite file.
Exit status 1 when any child hung or was lost. ``--json PATH`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .django import _postgres
from .django.servers import Client, Gunicorn
from .harness import Skipped

KILLED = re.compile(r"the detached child \(pid (\d+)\) did not start its work")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.forks", description=__doc__)
    parser.add_argument("--forks", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8, help="the worker's request threads")
    parser.add_argument("--noise", type=int, default=4, help="clients hitting /noisy/")
    parser.add_argument("--fork-clients", type=int, default=2)
    parser.add_argument("--start-timeout", type=float, default=5.0)
    parser.add_argument("--wait", type=float, default=60.0)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument(
        "--fork-server",
        action="store_true",
        help="start wove.start_fork_server() in the worker (bench/django/wsgi.py) first",
    )
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    with ExitStack() as stack:
        out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wove-forks-")))
        env = {
            "BENCH_FORK_DIR": str(out),
            "BENCH_FORK_START_TIMEOUT": str(options.start_timeout),
            "PYTHONUNBUFFERED": "1",
            "BENCH_FORK_SERVER": "1" if options.fork_server else "0",
        }
        database = "sqlite"
        if not options.sqlite:
            try:
                server = stack.enter_context(_postgres())
                env["BENCH_DATABASE_URL"] = server.url
                database = "postgresql (Django's pool)"
            except Skipped as why:
                print(f"no PostgreSQL ({why}): SQLite instead", file=sys.stderr)
        if "BENCH_DATABASE_URL" not in env:
            env["BENCH_SQLITE"] = str(out / "db.sqlite3")
        gunicorn = Gunicorn(env, threads=options.threads)
        stack.callback(gunicorn.stop)
        report = measure(gunicorn, out, options)
        report["database"] = database
        report["fork_server"] = options.fork_server
    print_report(report)
    if options.json:
        options.json.write_text(json.dumps(report, indent=2))
    sys.exit(1 if report["hung"] or report["lost"] else 0)


def measure(gunicorn: Gunicorn, out: Path, options: argparse.Namespace) -> dict[str, Any]:
    stop = threading.Event()
    noise_requests = [0] * options.noise
    errors: list[str] = []

    def make_noise(slot: int) -> None:
        client = Client(gunicorn.port)
        try:
            while not stop.is_set():
                client.get("/noisy/")
                noise_requests[slot] += 1
        except Exception as exc:  # reported, and the measurement goes on
            errors.append(f"noise: {exc!r}")
        finally:
            client.close()

    numbers = iter(range(options.forks))
    numbers_lock = threading.Lock()
    latencies: list[float] = []

    def fork_requests() -> None:
        client = Client(gunicorn.port)
        try:
            while True:
                with numbers_lock:
                    number = next(numbers, None)
                if number is None:
                    return
                started = time.perf_counter()
                client.get(f"/fork/{number}/")
                latencies.append(time.perf_counter() - started)
        except Exception as exc:
            errors.append(f"fork: {exc!r}")
        finally:
            client.close()

    noise = [threading.Thread(target=make_noise, args=(i,)) for i in range(options.noise)]
    forkers = [threading.Thread(target=fork_requests) for _ in range(options.fork_clients)]
    began = time.perf_counter()
    for thread in noise + forkers:
        thread.start()
    for thread in forkers:
        thread.join()
    forking = time.perf_counter() - began
    # Keep the noise up while the last children start, then wait for them all.
    deadline = time.monotonic() + options.wait
    while time.monotonic() < deadline:
        if _settled(out, gunicorn, options.forks):
            break
        time.sleep(0.5)
    stop.set()
    for thread in noise:
        thread.join()
    started = {int(p.stem) for p in out.glob("*.start")}
    done = {int(p.stem) for p in out.glob("*.done")}
    killed = _killed(gunicorn)
    hung = sorted(started - done)
    for number in hung:  # stuck inside its work: stop it, by the pid it wrote
        _kill(int((out / f"{number}.start").read_text()))
    waits = [_waiting_in(out / f"{number}.stack") for number in hung]
    lost = options.forks - len(started) - len(killed)
    return {
        "forks": options.forks,
        "done": len(done),
        "killed_before_start": len(killed),
        "hung": len(hung),
        "hung_numbers": hung[:20],
        "hung_waiting_in": sorted({w for w in waits if w}),
        "lost": max(lost, 0),
        "threads": options.threads,
        "noise_clients": options.noise,
        "noise_requests": sum(noise_requests),
        "fork_clients": options.fork_clients,
        "start_timeout_s": options.start_timeout,
        "seconds_forking": round(forking, 2),
        "fork_request_ms_median": round(statistics.median(latencies) * 1000, 2)
        if latencies
        else None,
        "errors": errors[:10],
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def _waiting_in(stacks: Path) -> str:
    """The innermost frames of the first thread in a hung child's faulthandler dump."""
    try:
        lines = stacks.read_text().splitlines()
    except OSError:
        return ""
    frames = [line.strip() for line in lines if line.strip().startswith("File ")]
    return " <- ".join(frames[:3])


def _settled(out: Path, gunicorn: Gunicorn, forks: int) -> bool:
    done = len(list(out.glob("*.done")))
    return done + len(_killed(gunicorn)) >= forks


def _killed(gunicorn: Gunicorn) -> set[int]:
    return {int(pid) for pid in KILLED.findall(gunicorn.log())}


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def print_report(report: dict[str, Any]) -> None:
    how = "through a fork server" if report["fork_server"] else "forked from the worker"
    print(
        f"{report['forks']} detaches {how}: one gunicorn gthread worker "
        f"({report['threads']} threads; {report['noise_clients']} clients of /noisy/ made "
        f"{report['noise_requests']} requests meanwhile, each logging, printing and "
        f"querying on 3 threads; database: {report['database']})"
    )
    print(
        f"  done: {report['done']}  killed before starting: {report['killed_before_start']}"
        f"  hung in their work: {report['hung']}  lost: {report['lost']}"
    )
    print(
        f"  {report['seconds_forking']} s of forking; a fork request's median: "
        f"{report['fork_request_ms_median']} ms; {report['cpus']} CPUs, Python {report['python']}"
    )
    for where in report["hung_waiting_in"]:
        print(f"  a hung child waited in: {where}")
    for error in report["errors"]:
        print(f"  error: {error}")


if __name__ == "__main__":
    main()
