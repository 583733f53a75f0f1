"""The instrumentor surface when ``opentelemetry-instrumentation`` is not installed.

``opentelemetry-instrument`` (auto-instrumentation) comes with that package, and then
:class:`~wove.contrib.opentelemetry.WoveInstrumentor` subclasses its ``BaseInstrumentor``.
Without it, ``pip install "wove[opentelemetry]"`` brings only ``opentelemetry-api``, and
this class gives the same surface: a singleton per class, ``instrument()`` and
``uninstrument()`` that do nothing (but log a warning) when repeated, and
``is_instrumented_by_opentelemetry``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Collection
from typing import Any, ClassVar

_log = logging.getLogger(__name__)


class MinimalInstrumentor(ABC):
    """``opentelemetry.instrumentation.instrumentor.BaseInstrumentor``, less its check of
    installed versions (what Wove instruments is always there: it is Wove)."""

    _instance: ClassVar[Any] = None
    _is_instrumented_by_opentelemetry = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls._instance is None:
            cls._instance = object.__new__(cls)
        return cls._instance

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return self._is_instrumented_by_opentelemetry

    @abstractmethod
    def instrumentation_dependencies(self) -> Collection[str]:
        """The distributions (requirement strings) that must be installed."""

    @abstractmethod
    def _instrument(self, **kwargs: Any) -> Any: ...

    @abstractmethod
    def _uninstrument(self, **kwargs: Any) -> Any: ...

    def instrument(self, **kwargs: Any) -> Any:
        """Instrument (once: a second call only logs a warning)."""
        if self._is_instrumented_by_opentelemetry:
            _log.warning("Attempting to instrument while already instrumented")
            return None
        kwargs.pop("skip_dep_check", None)
        kwargs.pop("raise_exception_on_conflict", None)
        result = self._instrument(**kwargs)
        self._is_instrumented_by_opentelemetry = True
        return result

    def uninstrument(self, **kwargs: Any) -> Any:
        """Stop instrumenting (a call while not instrumented only logs a warning)."""
        if self._is_instrumented_by_opentelemetry:
            result = self._uninstrument(**kwargs)
            self._is_instrumented_by_opentelemetry = False
            return result
        _log.warning("Attempting to uninstrument while already uninstrumented")
        return None
