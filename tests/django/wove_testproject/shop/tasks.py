"""A task for detach(mode="tasks"): django.tasks on Django 6, the backport on 5.2."""

from __future__ import annotations

try:
    from django.tasks import task
except ImportError:  # Django 5.2
    from django_tasks import task


@task()
def write_marker(path: str, text: str) -> None:
    with open(path, "w") as marker:
        marker.write(text)
