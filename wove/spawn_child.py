"""Entry point of a spawned detached child: ``python -m wove.spawn_child``.

Reads a cloudpickled ``(Recipe, on_done, followers' children)`` from standard input,
runs the weave and calls ``on_done`` (inside the followers' children,
``wove.detached_followers``) and exits with ``os._exit`` (0 on success, 1 on failure).
"""

from __future__ import annotations

import logging
import os
import sys


def main() -> None:
    payload = sys.stdin.buffer.read()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        import cloudpickle

        from .detached_followers import run_followed
        from .execution import run_detached

        recipe, on_done, followed = cloudpickle.loads(payload)
        status = run_followed(followed, lambda: run_detached(recipe, on_done))
    except BaseException:  # e.g. a module the weave needs is missing here: say so
        logging.getLogger("wove").exception("wove: the spawned detached child failed")
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
