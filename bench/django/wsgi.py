"""WSGI entry point of the benchmark's Django project (for gunicorn)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django.settings")

application = get_wsgi_application()
