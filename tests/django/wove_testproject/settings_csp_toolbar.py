"""settings_toolbar (django-debug-toolbar with Wove's panel, templates from the apps)
under the strict Content Security Policy of settings_csp (Django 6)."""

from .settings_csp import SECURE_CSP  # noqa: F401
from .settings_toolbar import *  # noqa: F403
from .settings_toolbar import MIDDLEWARE

MIDDLEWARE = ["django.middleware.csp.ContentSecurityPolicyMiddleware", *MIDDLEWARE]
