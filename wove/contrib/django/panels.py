"""A django-debug-toolbar panel: the request's weaves as a waterfall, each task's SQL
statements below it (the toolbar's SQL panel sees only the request thread's).

Settings (django-debug-toolbar 6 or later)::

    INSTALLED_APPS = [..., "debug_toolbar", "wove.contrib.django"]

    MIDDLEWARE = [
        "debug_toolbar.middleware.DebugToolbarMiddleware",
        "wove.contrib.django.middleware.WoveMiddleware",  # after the toolbar's, see below
        ...,
    ]

    # Listing DEBUG_TOOLBAR_PANELS replaces the toolbar's default list, so repeat it:
    from debug_toolbar.settings import PANELS_DEFAULTS

    DEBUG_TOOLBAR_PANELS = [*PANELS_DEFAULTS, "wove.contrib.django.panels.WovePanel"]

Order: ``WoveMiddleware`` must come after ``DebugToolbarMiddleware`` in ``MIDDLEWARE``.
The toolbar collects its panels' data when the response comes back up through its own
middleware, and ``WoveMiddleware`` sets ``request.wove_trace`` when the response passes
back through it; listed before the toolbar, it is still recording at that moment and
the panel has nothing to show (it then says so, and the toolbar's system checks warn,
``wove.W002``). Weaves run by middleware listed above ``WoveMiddleware`` are not traced.

``Server-Timing``: the toolbar replaces the response's header with its own panels'
entries (its timer panel adds some to every response), which would drop Wove's. This panel adds the
header the response had (Wove's entries and any of the app's) back after the toolbar's.

The stats the toolbar stores (JSON, in memory or in its database store) are the
rendered waterfall and the numbers for the sidebar, so the history panel and panels
loaded later show the same drawing. Nothing else in Wove imports this module, so the
toolbar is needed only by projects that list the panel.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning
from django.http import HttpRequest, HttpResponseBase
from django.urls import NoReverseMatch, reverse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from wove.contrib.traces import RequestTrace, waterfall_fragment
from wove.contrib.traces.waterfall import plural

from . import conf
from .checks import MIDDLEWARE_PATH
from .csp import csp_nonce
from .recording import store

try:
    from debug_toolbar.panels import Panel
except ImportError as exc:  # only settings naming this panel import this module
    raise ImportError(
        "wove.contrib.django.panels.WovePanel is a django-debug-toolbar panel: install "
        "django-debug-toolbar, or remove the panel from DEBUG_TOOLBAR_PANELS"
    ) from exc

TOOLBAR_MIDDLEWARE = "debug_toolbar.middleware.DebugToolbarMiddleware"

# The toolbar resets every element under #djDebug (height, padding, background); the
# fragment's rules are put under it too, so they win.
_TOOLBAR_ROOT = "#djDebug"


class WovePanel(Panel):  # type: ignore[misc, unused-ignore]  # Panel is Any without debug_toolbar
    """This request's weave tasks as a waterfall, with their lanes, retries and errors."""

    title = "Wove"
    is_async = True  # it only reads request.wove_trace: fine under ASGI

    @property
    def nav_subtitle(self) -> str:
        stats = self._stats()
        if stats.get("problem"):
            return "no trace"
        tasks = int(stats.get("tasks", 0))
        if not tasks:
            return "no weaves"
        return f"{plural(tasks, 'task')} in {_ms(float(stats.get('weave_ms', 0.0)))}"

    @property
    def content(self) -> SafeString:
        stats = self._stats()
        problem = stats.get("problem")
        if problem:
            return mark_safe(f'<p class="wove-problem">{escape(problem)}</p>')
        if not stats.get("tasks"):
            return mark_safe("<p>This request ran no weave.</p>")
        # Built by waterfall_fragment, which escapes everything that came from the request.
        return mark_safe(str(stats.get("html", "")))

    def generate_stats(self, request: HttpRequest, response: HttpResponseBase) -> None:
        trace = getattr(request, "wove_trace", None)
        if not isinstance(trace, RequestTrace):
            self._record({"problem": _why_no_trace()})
            return
        stats: dict[str, Any] = {
            "id": trace.id,
            "tasks": trace.task_count,
            "weave_ms": round(trace.weave_time * 1000, 3),
            "duration_ms": round(trace.duration * 1000, 3),
        }
        if trace.records:
            base_url = _trace_pages() if _is_stored(trace) else ""
            # The toolbar shows the stored drawing in this request's page, under this
            # request's Content-Security-Policy: its <style> carries this request's nonce.
            html = waterfall_fragment(
                [trace], base_url=base_url, within=_TOOLBAR_ROOT, nonce=csp_nonce(request)
            )
            stats["html"] = _pool_queries_note(trace) + html
        self._record(stats)

    def generate_server_timing(self, request: HttpRequest, response: HttpResponseBase) -> None:
        # Called for every panel before the toolbar sets the headers get_headers returns.
        self._server_timing: str = response.get("Server-Timing", "")

    def get_headers(self, request: HttpRequest) -> dict[str, str]:
        # The base class returns only what record_server_timing stored: nothing, here.
        kept = getattr(self, "_server_timing", "")
        return {"Server-Timing": kept} if kept else {}

    def _stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.get_stats()  # type: ignore[no-untyped-call, unused-ignore]
        return stats

    def _record(self, stats: dict[str, Any]) -> None:
        self.record_stats(stats)  # type: ignore[no-untyped-call, unused-ignore]

    @classmethod
    def run_checks(cls) -> list[CheckMessage]:
        middleware = list(getattr(settings, "MIDDLEWARE", ()))
        if MIDDLEWARE_PATH not in middleware or TOOLBAR_MIDDLEWARE not in middleware:
            return []  # Wove's own check and the toolbar's report a missing middleware
        if middleware.index(MIDDLEWARE_PATH) > middleware.index(TOOLBAR_MIDDLEWARE):
            return []
        return [
            Warning(
                "WoveMiddleware is listed before DebugToolbarMiddleware, so the Wove "
                "toolbar panel never sees a finished trace.",
                hint=f"Move {MIDDLEWARE_PATH!r} below {TOOLBAR_MIDDLEWARE!r} in MIDDLEWARE.",
                id="wove.W002",
            )
        ]


def _why_no_trace() -> str:
    middleware = list(getattr(settings, "MIDDLEWARE", ()))
    if MIDDLEWARE_PATH not in middleware:
        return (
            f"No Wove trace: add {MIDDLEWARE_PATH!r} to MIDDLEWARE, below {TOOLBAR_MIDDLEWARE!r}."
        )
    if not conf.wove_settings().record:
        return "No Wove trace: recording is off (settings.WOVE['RECORD'] is False)."
    wove_at = middleware.index(MIDDLEWARE_PATH)
    if TOOLBAR_MIDDLEWARE in middleware and wove_at < middleware.index(TOOLBAR_MIDDLEWARE):
        return (
            "No Wove trace yet when the toolbar collected its data: WoveMiddleware is "
            f"listed before DebugToolbarMiddleware. Move {MIDDLEWARE_PATH!r} below "
            f"{TOOLBAR_MIDDLEWARE!r} in MIDDLEWARE."
        )
    return (
        "No Wove trace: the response did not come through WoveMiddleware (a middleware "
        "listed above it answered, or the request raised)."
    )


def _pool_queries_note(trace: RequestTrace) -> str:
    """The SQL panel only sees the request thread's connections: say what it misses."""
    count, ms = 0, 0.0
    for record in trace.records:
        extra = getattr(record, "extra", {})
        queries, query_ms = extra.get("queries"), extra.get("query_ms")
        if record.lane == "thread" and isinstance(queries, int) and queries > 0:
            count += queries
            ms += query_ms if isinstance(query_ms, int | float) else 0.0
    if not count:
        return ""
    return (
        f"<p>{plural(count, 'SQL query', 'SQL queries')} ({_ms(ms)}) ran in tasks on Wove's "
        "worker threads; the SQL panel lists only the request thread's. Each task's "
        "statements are listed below the waterfall.</p>"
    )


def _is_stored(trace: RequestTrace) -> bool:
    """Whether the trace pages can still show it (its JSON link would work)."""
    return store().get(trace.id) is trace


def _trace_pages() -> str:
    """Where the trace pages are served, for the JSON link; empty if they are not."""
    try:
        return reverse("wove:trace_list")
    except NoReverseMatch:
        return ""


def _ms(ms: float) -> str:
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 1000 else f"{ms:,.0f} ms"
