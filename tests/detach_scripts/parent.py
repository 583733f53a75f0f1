"""A server-like parent process for tests/test_detach.py.

It listens on a TCP port of 127.0.0.1, registers an ``atexit`` handler, detaches a weave
with ``weave(background=True, fork=...)`` whose ``on_done`` writes a JSON file, closes its
listening socket, prints one JSON line about itself, and then exits at once, or with
``--linger`` stays alive (never calling ``wait``) until a line arrives on its stdin.

    python parent.py {fork,spawn} {ok,fail,no-cloudpickle} OUT_DIR [--linger] [--hook]
                     [--log] [--seconds S]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import select
import socket
import sys
import time
from pathlib import Path


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(line + "\n")


def _make_on_done(path: Path, tag: str):
    """A closure: with spawn it only works if cloudpickle ships it with its cells."""

    def on_done(result):
        error = result.exception
        record = {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "sid": os.getsid(0),
            "tag": tag,
            "final": None if error is not None else result.final,
            "error_type": None if error is None else type(error).__name__,
            "error": None if error is None else str(error),
        }
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(record), encoding="utf-8")
        os.replace(partial, path)

    return on_done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["fork", "spawn"])
    parser.add_argument("scenario", choices=["ok", "fail", "no-cloudpickle"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--linger", action="store_true")
    parser.add_argument("--hook", action="store_true")
    parser.add_argument("--log", action="store_true")
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    out: Path = args.out

    if args.scenario == "no-cloudpickle":
        sys.modules["cloudpickle"] = None  # type: ignore[assignment]

    import wove
    from wove import weave

    parent_pid = os.getpid()
    atexit.register(_append, out / "atexit.txt", str(parent_pid))
    if args.log:
        wove.configure(detached_output=str(out / "detached.log"))
    if args.hook:
        wove.at_detached_child(lambda: _append(out / "hook.txt", str(os.getpid())))

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    fork: bool | str = True if args.mode == "fork" else "spawn"
    on_done = _make_on_done(out / "on_done.json", tag=f"closure-{args.mode}")
    fail = args.scenario == "fail"
    report: dict[str, object] = {
        "parent_pid": parent_pid,
        "parent_sid": os.getsid(0),
        "port": port,
    }

    started = time.perf_counter()
    try:
        with weave(background=True, fork=fork, on_done=on_done, seconds=args.seconds) as w:

            @w.do
            def slept(seconds):
                time.sleep(seconds)
                return seconds

            @w.do
            def summary(slept):
                if fail:
                    raise ValueError("detached boom")
                return f"slept {slept}"

    except ImportError as error:  # caught as the built-in class users know
        report["error_type"] = type(error).__name__
        report["is_wove_error"] = isinstance(error, wove.WoveError)
        report["error"] = str(error)
        report["child_pid"] = None
    else:
        report["elapsed"] = time.perf_counter() - started
        report["child_pid"] = w.pid

    listener.close()
    print(json.dumps(report), flush=True)

    if args.linger:
        # Stay alive like a server worker that never reaps its children.
        select.select([sys.stdin], [], [], 30.0)


if __name__ == "__main__":
    main()
