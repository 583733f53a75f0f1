"""Signed envelopes for Celery: the shared :mod:`wove.contrib.remote.envelope`, under the
name this package has always had."""

from wove.contrib.remote.envelope import (
    MAX_CLOCK_SKEW,
    MAX_TRACE_CHARS,
    MAX_TRACE_ENTRIES,
    MIN_SECRET_BYTES,
    TRACE,
    VERSION,
    EnvelopeError,
    Keyring,
    Reason,
    derive_key_id,
    envelope_trace,
    open_envelope,
    purpose_key,
    seal,
    trace_json,
    trace_problem,
)

__all__ = [
    "MAX_CLOCK_SKEW",
    "MAX_TRACE_CHARS",
    "MAX_TRACE_ENTRIES",
    "MIN_SECRET_BYTES",
    "TRACE",
    "VERSION",
    "EnvelopeError",
    "Keyring",
    "Reason",
    "derive_key_id",
    "envelope_trace",
    "open_envelope",
    "purpose_key",
    "seal",
    "trace_json",
    "trace_problem",
]
