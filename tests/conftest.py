"""The Django adapter's tests (tests/django) run in their own pytest session, with
pytest-django and the test project's settings: ``make unit`` runs both sessions."""

import os

collect_ignore = [] if os.environ.get("DJANGO_SETTINGS_MODULE") else ["django"]
