"""The test project under Django 6's Content Security Policy middleware with a strict
policy: everything from this origin, scripts and styles only with the request's nonce
(so no ``style`` attribute and no inline script without it). tests/django/test_csp.py
runs it; Django 5.2 has no such middleware. No ``TEMPLATES`` setting: the trace pages
use Wove's own template engine here (settings_csp_toolbar has the project's).
"""

from django.utils.csp import CSP

from .settings import *  # noqa: F403
from .settings import MIDDLEWARE

MIDDLEWARE = ["django.middleware.csp.ContentSecurityPolicyMiddleware", *MIDDLEWARE]
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.NONCE],
}
