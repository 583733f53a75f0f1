"""The trace pages and the toolbar panel under Django 6's Content Security Policy
middleware with a strict policy (settings_csp: ``default-src 'self'``, scripts and styles
only with the request's nonce), in headless Chromium: the page's console shows no
violation, and the bars are drawn (pixels of the bars' colours, one band per task).

A policy without ``'unsafe-inline'`` for styles blocks every ``style`` attribute, so this
is what proves the bars are placed by the nonce'd ``<style>`` element's rules. The trace
pages run without a ``TEMPLATES`` setting (Wove's own engine renders its templates), the
toolbar project with one (the project's engine does).
"""

from __future__ import annotations

import os
from pathlib import Path

import django
import pytest
from browser import CHROMIUM, bands, console_messages, dev_server, hex_colour, read_png, screenshot

from wove.contrib.traces.waterfall import COLOURS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        django.VERSION < (6, 0),
        reason="Django's ContentSecurityPolicyMiddleware is new in Django 6.0",
    ),
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"no {CHROMIUM}: `make chromium` installs Debian's package",
    ),
]

THREAD = hex_colour(COLOURS["thread"])
LOOP = hex_colour(COLOURS["loop"])


def _violations(output: str) -> list[str]:
    return [m for m in console_messages(output) if "Content Security Policy" in m]


def _task_bars(png: Path, x_to: int | None = None) -> list[tuple[int, int]]:
    """The bands of thread-lane bars, at least 10 rows tall, below the legend."""
    image = read_png(png)
    legend = bands(image, LOOP, x_to=x_to)
    assert legend, "no legend drawn"
    below = legend[0][1] + 1
    found = bands(image, THREAD, x_to=x_to)
    return [(a, b) for a, b in found if a > below and b - a + 1 >= 10]


def test_the_trace_pages_draw_under_a_strict_policy(tmp_path: Path) -> None:
    server = dev_server(tmp_path, "wove_testproject.settings_csp")
    try:
        assert server.get("/parallel/").status == 200  # three sync tasks
        page = server.get("/wove/")
        policy = page.headers["Content-Security-Policy"]
        nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
        assert f"style-src 'self' 'nonce-{nonce}'" in policy, policy
        body = page.body.decode()
        assert body.count(f'<style nonce="{nonce}">') == 2  # the page's and the drawing's
        assert "style=" not in body
        trace_id = server.ok_json("/wove/traces.json")["traces"][0]["id"]
        shots = {}
        for name, path in (("list", "/wove/"), ("detail", f"/wove/{trace_id}/")):
            png = tmp_path / f"{name}.png"
            output = screenshot(server.url + path, png, width=1200, height=900)
            assert not _violations(output), _violations(output)
            shots[name] = _task_bars(png)
    except BaseException:
        print(server.log())
        raise
    finally:
        server.stop()
    assert len(shots["list"]) == 3, shots  # authors, books, totals
    assert len(shots["detail"]) == 3, shots


def test_the_toolbar_panel_draws_under_a_strict_policy(tmp_path: Path) -> None:
    server = dev_server(tmp_path, "wove_testproject.settings_csp_toolbar")
    png = tmp_path / "panel.png"
    try:
        # /toolbar-page/ runs /parallel/'s weave; its nonce'd script opens the panel.
        output = screenshot(
            server.url + "/toolbar-page/", png, width=1400, height=900, wait_ms=5000
        )
        assert "panel_id=WovePanel" in server.log()
    except BaseException:
        print(server.log())
        raise
    finally:
        server.stop()
    assert not _violations(output), _violations(output)
    bars = _task_bars(png, x_to=1400 - 240)  # the toolbar's sidebar: 240 px on the right
    assert len(bars) == 3, bars
