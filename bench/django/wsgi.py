"""WSGI entry point of the benchmark's Django project (for gunicorn)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django.settings")

application = get_wsgi_application()

if os.environ.get("BENCH_FORK_SERVER") == "1":
    # The fork measurement's fork-server run: forked detaches come from a process that
    # never had a second thread (this worker has only its main thread here).
    import wove

    wove.start_fork_server()
