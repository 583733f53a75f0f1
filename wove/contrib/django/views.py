"""The trace pages: recent requests as a waterfall, one request, and the same as JSON.

Include them where you like: ``path("wove/", include("wove.contrib.django.urls"))``.
The HTML pages are the templates ``wove/trace_list.html`` and ``wove/trace_detail.html``
(a project may override them); their ``<style>`` elements carry the request's
Content-Security-Policy nonce when a CSP middleware set one, and nothing on them uses a
``style`` attribute or a script, so a strict policy lets them draw.
Who may see them is ``WOVE["TRACE_ACCESS"]`` (default: active staff users, or anyone
while ``DEBUG`` is on); everyone else gets 404, so the page's existence is not shown.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache

from wove.contrib.traces import RequestTrace, trace_json, waterfall_fragment
from wove.contrib.traces.waterfall import PAGE_CSS

from . import conf
from .csp import csp_nonce
from .pages import render_page
from .recording import store

View = Callable[..., HttpResponse]


def _allowed(view: View) -> View:
    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not conf.wove_settings().trace_access(request):
            raise Http404("no such page")
        return view(request, *args, **kwargs)

    return never_cache(guarded)


@_allowed
def trace_list(request: HttpRequest) -> HttpResponse:
    """Every stored request, newest first, each drawn as a waterfall."""
    base = reverse("wove:trace_list")
    traces = store().recent()
    return _page(request, "wove/trace_list.html", "Wove traces", traces, base)


@_allowed
def trace_detail(request: HttpRequest, trace_id: str) -> HttpResponse:
    trace = store().get(trace_id)
    if trace is None:
        raise Http404(f"no trace {trace_id!r}: it was never stored, or newer ones replaced it")
    base = reverse("wove:trace_list")
    title = f"{trace.method} {trace.path}"
    return _page(request, "wove/trace_detail.html", title, [trace], base, trace=trace)


def _page(
    request: HttpRequest,
    template: str,
    title: str,
    traces: list[RequestTrace],
    base: str,
    trace: RequestTrace | None = None,
) -> HttpResponse:
    """A page of ``traces``; ``trace``: the one request a detail page shows, which then
    links back to the list."""
    nonce = csp_nonce(request)
    drawing = waterfall_fragment(
        traces, base_url=base, title=title, back_link=trace is not None, nonce=nonce
    )
    context: dict[str, Any] = {
        "title": title,
        "traces": traces,
        # Built by waterfall_fragment, which escapes everything that came from a request.
        "waterfall": mark_safe(drawing),
        "wove_nonce": nonce,
        "page_css": mark_safe(PAGE_CSS),
    }
    if trace is not None:
        context["trace"] = trace
    return HttpResponse(render_page(request, template, context))


@_allowed
def trace_detail_json(request: HttpRequest, trace_id: str) -> JsonResponse:
    trace = store().get(trace_id)
    if trace is None:
        raise Http404(f"no trace {trace_id!r}")
    return JsonResponse(trace_json(trace))


@_allowed
def trace_list_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"traces": [trace_json(t) for t in store().recent()]})
