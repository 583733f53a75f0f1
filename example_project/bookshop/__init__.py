"""The bookshop project. Its Celery app (bookshop/celery.py) is loaded with Django, as
Celery's Django guide does, but only when Celery and its Redis client are installed:
``make demo`` serves the bookshop without them (the royalty page then says what to
install)."""

from __future__ import annotations

import importlib.util

CELERY_INSTALLED = all(importlib.util.find_spec(name) is not None for name in ("celery", "redis"))

if CELERY_INSTALLED:
    from .celery import app as celery_app

    __all__ = ["CELERY_INSTALLED", "celery_app"]
