"""Wove: run the slow parts of one function concurrently, declared inline.

with weave() as w:
    @w.do
    def author(): ...
    @w.do
    def books(): ...
    @w.do
    def context(author, books): ...
w.result.final
"""

from .background import wait_for_background
from .detach import at_detached_child
from .environments import DetachedWeave, RemoteCall, RemoteEnv, register_env
from .errors import (
    CircularDependencyError,
    DefinitionError,
    DetachError,
    InvalidOptionError,
    MappingError,
    MaxPendingError,
    MissingDependencyError,
    RemoteNeverRan,
    RemoteResultLost,
    RemoteTaskError,
    RemoteWorkerLost,
    ReservedNameError,
    TaskCancelled,
    TaskTimeout,
    UnknownNameError,
    UnresolvedNameError,
    WeaveStateError,
    WoveError,
)
from .execution import add_error_hint
from .fork_server import start_fork_server, stop_fork_server
from .helpers import batch, denone, flatten, fold, redict, undict
from .lanes import add_thread_call_wrapper
from .merge import merge
from .process_defaults import Defaults, config, defaults
from .result import WoveResult
from .runtime import Settings, configure, settings
from .template import Weave
from .tracing import TraceRecord, annotate, collect, collecting
from .weave import WeaveBlock, weave

__version__ = "0.1.0"

__all__ = [
    "CircularDependencyError",
    "Defaults",
    "DefinitionError",
    "DetachError",
    "DetachedWeave",
    "InvalidOptionError",
    "MappingError",
    "MaxPendingError",
    "MissingDependencyError",
    "RemoteCall",
    "RemoteEnv",
    "RemoteNeverRan",
    "RemoteResultLost",
    "RemoteTaskError",
    "RemoteWorkerLost",
    "ReservedNameError",
    "Settings",
    "TaskCancelled",
    "TaskTimeout",
    "TraceRecord",
    "UnknownNameError",
    "UnresolvedNameError",
    "Weave",
    "WeaveBlock",
    "WeaveStateError",
    "WoveError",
    "WoveResult",
    "__version__",
    "add_error_hint",
    "add_thread_call_wrapper",
    "annotate",
    "at_detached_child",
    "batch",
    "collect",
    "collecting",
    "config",
    "configure",
    "defaults",
    "denone",
    "flatten",
    "fold",
    "merge",
    "redict",
    "register_env",
    "settings",
    "start_fork_server",
    "stop_fork_server",
    "undict",
    "wait_for_background",
    "weave",
]
