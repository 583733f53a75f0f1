"""The request's Content-Security-Policy nonce, for the ``<style>`` elements Wove draws.

Django 6's ``ContentSecurityPolicyMiddleware`` keeps a lazy nonce on the request (read
through ``django.middleware.csp.get_nonce``); django-csp sets ``request.csp_nonce``.
Reading it makes the middleware put it in the response's policy, so it is read only
where a page uses it.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest

_get_nonce: Callable[[HttpRequest], object] | None
try:
    from django.middleware.csp import get_nonce as _get_nonce  # Django 6
except ImportError:  # Django 5.2: no CSP middleware, so no nonce from Django
    _get_nonce = None


def csp_nonce(request: HttpRequest) -> str | None:
    """The nonce for this request's policy, or None when no CSP middleware set one."""
    nonce = getattr(request, "csp_nonce", None)  # django-csp
    if nonce is None and _get_nonce is not None:
        nonce = _get_nonce(request)
    return None if nonce is None else str(nonce)
