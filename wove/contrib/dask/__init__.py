"""Wove on Dask: tasks and detached weaves on a ``distributed`` cluster.

``pip install "wove[dask]"``. In the processes that run weaves::

    import wove
    from wove.contrib.dask import DaskEnv

    wove.register_env("dask", DaskEnv("tcp://scheduler:8786"))

then ``@w.do(env="dask")`` runs a task on a Dask worker. See docs/environments.md.
"""

from .env import DaskEnv

__all__ = ["DaskEnv"]
