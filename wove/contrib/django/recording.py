"""The process's trace recorder and store, built from the ``WOVE`` settings.

One per process (each gunicorn worker has its own store, as the docs say), rebuilt
when its settings change (``override_settings`` in tests), kept otherwise.
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
                    TraceStore(options.trace_store_size),
                    keep_empty=options.keep_empty_traces,
                    sample_rate=options.trace_sample_rate,
                    slow_ms=options.trace_slow_ms,
                    unsampled_timings=options.trace_unsampled_timings,
                )
            current = _recorder
    return current


def store() -> TraceStore:
    """The bounded store of recent traces (the trace page reads it)."""
    kept = recorder().store
    assert kept is not None  # recorder() always builds one
    return kept


def _forget() -> None:
    """Settings changed: a new store only if its size or what it keeps changed."""
    global _recorder
    with _lock:
        if _recorder is None or _recorder.store is None:
            return
        try:
            options = conf.wove_settings()
        except conf.WoveSettingsError:
            return  # reported by the system check; keep recording as before
        if (
            options.trace_store_size != _recorder.store.max_requests
            or options.keep_empty_traces != _recorder.keep_empty
        ):
            _recorder = None
        else:  # the same store; sampling changes apply to the next request
            _recorder.configure_sampling(options.trace_sample_rate, options.trace_slow_ms)
            _recorder.unsampled_timings = options.trace_unsampled_timings


conf.on_reload(_forget)
