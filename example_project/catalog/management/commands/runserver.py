"""Django's ``runserver``, which also prints the demo's pages once it is listening."""

from __future__ import annotations

from django.core.management.commands.runserver import Command as RunserverCommand
from django.db import DatabaseError, connection

from catalog.models import Author

PAGES = (
    ("", "the bookshop: every author, and what to look at"),
    ("authors/{slug}/", "the author page, sequential and with Wove, timed side by side"),
    ("authors/{slug}/sequential/", "the sequential version alone"),
    ("authors/{slug}/wove/", "the Wove version alone (Server-Timing in the network panel)"),
    ("authors/{slug}/royalties/", "one task on a Celery worker (`make demo-worker` starts one)"),
    ("orders/", "place an order: its receipt is detached, sent after the response"),
    ("wove/", "Wove's trace pages: a waterfall of every recent request"),
)


class Command(RunserverCommand):
    def on_bind(self, server_port: int) -> None:
        super().on_bind(server_port)
        host = "0.0.0.0" if self.addr == "0" else self.addr
        if self._raw_ipv6:
            host = f"[{host}]"
        base = f"{self.protocol}://{host}:{server_port}/"
        try:
            first = Author.objects.order_by("name").values_list("slug", flat=True).first()
        except DatabaseError:
            first = None  # not migrated yet
        connection.close()  # the server's threads open their own
        lines = ["", "The Wove example bookshop is up. Open:"]
        for path, what in PAGES:
            if "{slug}" in path and first is None:
                continue  # no data yet: `manage.py seed`
            url = base + path.format(slug=first)
            lines.append(f"  {url:<58} {what}")
        if first is None:
            lines.append("  (no authors yet: `manage.py migrate` and `manage.py seed` add them)")
        lines.append("Without Django, the core tour: .venv/bin/python examples/demo.py")
        lines.append("")
        self.stdout.write("\n".join(lines))
        self.stdout.flush()
