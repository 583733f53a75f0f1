"""The test project with django-debug-toolbar and Wove's panel (tests/django/test_panel.py
and test_waterfall_screenshot.py run real servers with it).

``WOVE_TEST_TOOLBAR_ORDER=before`` lists WoveMiddleware above the toolbar's middleware:
the order the panel's docs warn against.
"""

import os

from debug_toolbar.settings import PANELS_DEFAULTS

from .settings import *  # noqa: F403
from .settings import INSTALLED_APPS, MIDDLEWARE

INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.staticfiles", "debug_toolbar"]
STATIC_URL = "/static/"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
ROOT_URLCONF = "wove_testproject.urls_toolbar"
INTERNAL_IPS = ["127.0.0.1"]

_TOOLBAR = "debug_toolbar.middleware.DebugToolbarMiddleware"
if os.environ.get("WOVE_TEST_TOOLBAR_ORDER") == "before":
    MIDDLEWARE = [*MIDDLEWARE, _TOOLBAR]
else:
    MIDDLEWARE = [_TOOLBAR, *MIDDLEWARE]

DEBUG_TOOLBAR_PANELS = [*PANELS_DEFAULTS, "wove.contrib.django.panels.WovePanel"]
