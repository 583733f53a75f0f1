"""Wove for OpenTelemetry (``pip install "wove[opentelemetry]"``): a span per weave run
and per task attempt, nested in the trace of the code that runs the weave.

::

    from wove.contrib.opentelemetry import WoveInstrumentor

    WoveInstrumentor().instrument()  # or instrument(tracer_provider=provider)

``opentelemetry-instrument`` finds it by itself (the ``opentelemetry_instrumentor``
entry point ``wove``). Without an SDK configured, a weave costs one no-op span start.
See docs/opentelemetry.md.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from wove import __version__

from . import forked, remote, spans
from .remote import RemoteSpan

if TYPE_CHECKING:
    from .base import MinimalInstrumentor as _Base
else:
    try:  # what `opentelemetry-instrument` expects, when it is installed
        from opentelemetry.instrumentation.instrumentor import BaseInstrumentor as _Base
    except ImportError:  # only opentelemetry-api: the same surface
        from .base import MinimalInstrumentor as _Base

__all__ = ["RemoteSpan", "WoveInstrumentor"]


class WoveInstrumentor(_Base):
    """An OpenTelemetry instrumentor of every weave run in the process.

    ``instrument(tracer_provider=None)`` starts (the global tracer provider by default,
    also when an SDK configures it later); ``uninstrument()`` stops, for weaves started
    from then on. Like every OpenTelemetry instrumentor, it is a singleton, and a second
    ``instrument()`` or ``uninstrument()`` in a row only logs a warning. Its base is
    ``opentelemetry.instrumentation.instrumentor.BaseInstrumentor`` when
    ``opentelemetry-instrumentation`` is installed (what ``opentelemetry-instrument``
    loads), else :class:`~wove.contrib.opentelemetry.base.MinimalInstrumentor`, with the
    same methods.

    Each weave run is a span named ``weave <file>:<line>``, a child of the span current
    where the block starts; each task attempt, and each item of a mapped task, is a span
    named after the task, a child of the weave's, on whichever lane it runs (the spans
    that the task's own code opens are its children). All are of kind ``INTERNAL``. A
    task sent to a Celery worker runs there under a :class:`RemoteSpan`, a child of its
    attempt's span, recorded by this instrumentor's tracer when the worker instruments
    Wove. Work detached with ``detach(mode="fork")`` writes its runs and attempts down
    in the forked child, and their spans are made here when its report arrives, children
    of the span current at ``detach()``. See docs/opentelemetry.md for their attributes
    and statuses.
    """

    _remove: Callable[[], None] | None = None
    _unfollow: Callable[[], None] | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        """Nothing to check: the instrumented library is the one this class is part of."""
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(
            __name__, __version__, tracer_provider=kwargs.get("tracer_provider")
        )
        self._remove = spans.register(tracer)
        self._unfollow = forked.follow(tracer)  # detach(mode="fork"): spans made here
        remote.use_tracer(tracer)  # a remote task's span on this process, as a worker

    def _uninstrument(self, **kwargs: Any) -> None:
        remote.use_tracer(None)
        for remove in (self._remove, self._unfollow):
            if remove is not None:
                remove()
        self._remove = self._unfollow = None
