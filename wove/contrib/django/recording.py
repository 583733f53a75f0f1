"""The process's trace recorder and store, built from the ``WOVE`` settings.

One per process (each gunicorn worker has its own store, as the docs say), rebuilt when
the settings change so ``override_settings`` in tests takes effect.
"""

from __future__ import annotations

import threading

from wove.contrib.traces import RequestRecorder, TraceStore

from . import conf

_lock = threading.Lock()
_recorder: RequestRecorder | None = None


def recorder() -> RequestRecorder:
    """The recorder every request of this process uses."""
    global _recorder
    current = _recorder
    if current is None:
        with _lock:
            if _recorder is None:
                options = conf.wove_settings()
                _recorder = RequestRecorder(
                    TraceStore(options.trace_store_size), keep_empty=options.keep_empty_traces
                )
            current = _recorder
    return current


def store() -> TraceStore:
    """The bounded store of recent traces (the trace page reads it)."""
    kept = recorder().store
    assert kept is not None  # recorder() always builds one
    return kept


def _forget() -> None:
    global _recorder
    with _lock:
        _recorder = None


conf.on_reload(_forget)
