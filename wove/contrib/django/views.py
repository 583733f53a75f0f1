"""The trace pages: recent requests as a waterfall, one request, and the same as JSON.

Include them where you like: ``path("wove/", include("wove.contrib.django.urls"))``.
Who may see them is ``WOVE["TRACE_ACCESS"]`` (default: active staff users, or anyone
while ``DEBUG`` is on); everyone else gets 404, so the page's existence is not shown.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.cache import never_cache

from wove.contrib.traces import trace_json, waterfall_html

from . import conf
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
    return HttpResponse(waterfall_html(store().recent(), base_url=base))


@_allowed
def trace_detail(request: HttpRequest, trace_id: str) -> HttpResponse:
    trace = store().get(trace_id)
    if trace is None:
        raise Http404(f"no trace {trace_id!r}: it was never stored, or newer ones replaced it")
    base = reverse("wove:trace_list")
    title = f"{trace.method} {trace.path}"
    return HttpResponse(waterfall_html([trace], title=title, base_url=base, back_link=True))


@_allowed
def trace_detail_json(request: HttpRequest, trace_id: str) -> JsonResponse:
    trace = store().get(trace_id)
    if trace is None:
        raise Http404(f"no trace {trace_id!r}")
    return JsonResponse(trace_json(trace))


@_allowed
def trace_list_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"traces": [trace_json(t) for t in store().recent()]})
