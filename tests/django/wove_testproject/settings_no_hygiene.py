"""The test project with Wove's connection hygiene off: the control for the tests that
show what it prevents (connections left open on pool threads, pool exhaustion)."""

from .settings import *  # noqa: F403
from .settings import DATABASES, WOVE

WOVE = {**WOVE, "CONNECTION_HYGIENE": False}

if "pool" in DATABASES["default"].get("OPTIONS", {}):
    # Fail fast: the pool is exhausted for good once every connection sits on a pool thread.
    DATABASES["default"]["OPTIONS"]["pool"]["timeout"] = 3
