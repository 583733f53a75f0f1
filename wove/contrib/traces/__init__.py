"""The trace recording core shared by the Django and Starlette adapters.

A :class:`RequestRecorder` turns the weave records of one request into a
:class:`RequestTrace`, kept in a bounded :class:`TraceStore` and rendered as a
``Server-Timing`` header, JSON, or a waterfall (a whole page, or a fragment to embed).
Nothing here imports a web framework.
"""

from .render import server_timing, trace_json, waterfall_html
from .request import DETACHED, ActiveRequest, RequestRecorder, RequestTrace
from .store import TraceStore
from .waterfall import waterfall_fragment

__all__ = [
    "DETACHED",
    "ActiveRequest",
    "RequestRecorder",
    "RequestTrace",
    "TraceStore",
    "server_timing",
    "trace_json",
    "waterfall_fragment",
    "waterfall_html",
]
