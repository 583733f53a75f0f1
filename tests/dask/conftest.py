"""Shared by the Dask tests: a real ``distributed.LocalCluster`` of two worker processes
(each under a nanny, which restarts a worker that dies) on 127.0.0.1, started once per
session and closed afterwards, whatever happened. Its scheduler allows no failure
(``distributed.scheduler.allowed-failures`` 0), so a call whose worker dies fails at
once instead of being resubmitted: what the lost-worker test needs to see.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # None still means :8787; any free port here
        )
    try:
        yield cluster
    finally:
        cluster.close()
