"""What every remote environment shares: capturing a call by value
(:mod:`~wove.contrib.remote.capture`), the reply that brings back its value or its own
exception (:mod:`~wove.contrib.remote.replies`), signed envelopes for calls that cross a
broker (:mod:`~wove.contrib.remote.envelope`), broker I/O off the event loop
(:mod:`~wove.contrib.remote.sending`), running a call on a worker
(:mod:`~wove.contrib.remote.running`), and the caller's trace context
(:mod:`~wove.contrib.remote.tracing`). See docs/environments.md for the contract an
environment keeps.
"""

from . import capture, envelope, replies, running, sending, tracing

__all__ = ["capture", "envelope", "replies", "running", "sending", "tracing"]
