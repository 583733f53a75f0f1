"""Wove for Django: parallel ORM work that is correct, traced, and detachable.

Add ``"wove.contrib.django"`` to ``INSTALLED_APPS`` and
``"wove.contrib.django.middleware.WoveMiddleware"`` to ``MIDDLEWARE``; include
``wove.contrib.django.urls`` for the trace pages. See docs/django.md.
"""

from .after_response import detach

__all__ = ["detach"]
