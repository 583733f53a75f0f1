"""ASGI entry point of the benchmark's Django project (for uvicorn)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django.settings")

application = get_asgi_application()
