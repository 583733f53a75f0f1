"""The bookshop's Celery app, as in Celery's Django guide: ``celery -A bookshop worker``.

``make demo-worker`` (from the repository root) starts a Redis on 127.0.0.1:6390 and a
worker of this app. Its settings are Django's ``CELERY_*`` settings (the broker, the
result backend, the serializers: see bookshop/settings.py). The worker runs Django
(Celery's Django support calls ``django.setup()`` in it), so the Wove app registers the
remote environment of ``WOVE["ENVIRONMENTS"]`` there too, with the same keys, and the
worker's tasks use the same database as the web server.

``include`` registers Wove's one Celery task, ``wove.run``, which runs the tasks that the
web server sends with ``@w.do(env="celery")`` (catalog/views.py, the royalty statement).
This module is imported only when Celery is installed (bookshop/__init__.py): ``make
demo`` also runs without it.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bookshop.settings")

app = Celery("bookshop", include=["wove.contrib.celery"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
