"""Wove for Starlette and FastAPI (``pip install "wove[starlette]"``).

``WoveMiddleware`` records every weave a request runs (``Server-Timing``, a bounded trace
store, the waterfall pages at ``/wove/``) and runs the work ``detach()`` registered once
the response has been sent. See docs/starlette.md.
"""

from .after_response import detach
from .conf import DETACH_MODES, WoveOptions
from .middleware import WoveMiddleware

__all__ = ["DETACH_MODES", "WoveMiddleware", "WoveOptions", "detach"]
