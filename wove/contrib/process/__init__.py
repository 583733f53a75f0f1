"""Wove on a local process pool: CPU-bound tasks in worker processes of this machine.

``pip install "wove[process]"`` (cloudpickle). In the process that runs weaves::

    import wove
    from wove.contrib.process import ProcessEnv

    wove.register_env("process", ProcessEnv(workers=4))

then ``@w.do(env="process")`` runs a task in a worker process, in parallel with the
others despite the GIL. See docs/environments.md.
"""

from .env import ProcessEnv

__all__ = ["ProcessEnv"]
