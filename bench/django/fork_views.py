"""Views of the fork measurement (``python -m bench.forks``): one that detaches work
into a forked child, and a noisy one whose threads log, print and query while the forks
happen, so a fork can catch another thread holding a lock (logging's, stdout's, the
database driver's).

``BENCH_FORK_DIR`` is where each child writes ``<n>.start`` (its pid) when its work
begins and ``<n>.done`` when it ends, and ``<n>.stack`` (where it waits) if it hangs.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
from pathlib import Path

from django.db import connection
from django.http import HttpRequest, HttpResponse

from wove import weave
from wove.contrib.django import detach

logger = logging.getLogger("bench.forks")


def _query() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_sleep(0.001)")
        else:
            cursor.execute("SELECT 1")
        cursor.fetchall()


def _noise(where: str) -> None:
    for line in range(3):
        logger.info("noise from %s, line %d", where, line)
    print(f"noise on stdout from {where}", flush=True)
    _query()


def forked_work(number: int) -> None:
    """Runs in the forked child: the same things the parent's threads do. A child still
    here after ``STACK_AFTER`` seconds writes its threads' stacks to ``<n>.stack``."""
    out = Path(os.environ["BENCH_FORK_DIR"])
    (out / f"{number}.start").write_text(str(os.getpid()))
    with open(out / f"{number}.stack", "w") as stacks:
        faulthandler.dump_traceback_later(STACK_AFTER, file=stacks)
        _noise(f"forked child {number}")
        sys.stdout.flush()
        faulthandler.cancel_dump_traceback_later()
    (out / f"{number}.done").write_text(str(os.getpid()))


STACK_AFTER = 10.0  # seconds: far longer than the work takes


def fork(request: HttpRequest, number: int) -> HttpResponse:
    detach(forked_work, number, mode="fork")
    return HttpResponse("forked")


def noisy(request: HttpRequest) -> HttpResponse:
    with weave() as w:

        @w.do
        def first() -> None:
            _noise("a pool thread")

        @w.do
        def second() -> None:
            _noise("another pool thread")

    _noise("the request's thread")
    return HttpResponse("noise")
