"""The slow external price lookup, simulated locally: a real HTTP service on 127.0.0.1.

A bookshop rarely owns its prices: a distributor's API answers, one book per request,
in tens of milliseconds. Here that API is a small HTTP server started in a background
thread of this process, on a free port of 127.0.0.1, the first time a price is asked
for. It takes ``PRICE_SERVICE_SECONDS`` to answer each request (answering several at
once, as a real service does) and nothing leaves the machine. ``price_of()`` is the
client: a plain blocking HTTP call, the kind of code Wove runs on its thread pool.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PRICE_SERVICE_SECONDS = 0.08

_lock = threading.Lock()
_server: ThreadingHTTPServer | None = None


class _PriceHandler(BaseHTTPRequestHandler):
    """``GET /prices/<isbn>`` -> ``{"isbn": ..., "price": "12.99", "currency": "EUR"}``."""

    def do_GET(self) -> None:
        prefix = "/prices/"
        if not self.path.startswith(prefix):
            self.send_error(404)
            return
        isbn = self.path[len(prefix) :]
        time.sleep(PRICE_SERVICE_SECONDS)  # the distributor thinking about it
        cents = 599 + int(hashlib.sha256(isbn.encode()).hexdigest(), 16) % 2000
        body = json.dumps({"isbn": isbn, "price": f"{cents / 100:.2f}", "currency": "EUR"})
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # runserver's log already shows the page requests


def service_address() -> tuple[str, int]:
    """Where the price service listens; it starts on the first call."""
    global _server
    with _lock:
        if _server is None:
            server = ThreadingHTTPServer(("127.0.0.1", 0), _PriceHandler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, name="price-service", daemon=True).start()
            _server = server
        host, port = _server.server_address[:2]
        return str(host), int(port)


def price_of(isbn: str) -> Decimal:
    """Ask the price service for one book's price: one HTTP request, ~80 ms."""
    host, port = service_address()
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("GET", f"/prices/{isbn}")
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"price service answered {response.status} for {isbn}")
        return Decimal(json.loads(response.read())["price"])
    finally:
        connection.close()
