"""ASGI entry point of the test project (uvicorn in tests/django/test_real_servers.py)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wove_testproject.settings")

application = get_asgi_application()
