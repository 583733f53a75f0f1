"""WSGI entry point of the test project (gunicorn in tests/django/test_real_servers.py)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wove_testproject.settings")

application = get_wsgi_application()

if os.environ.get("WOVE_TEST_FORK_SERVER") == "1":
    # Before the worker's first request: it has only its main thread here.
    import wove

    wove.start_fork_server()
