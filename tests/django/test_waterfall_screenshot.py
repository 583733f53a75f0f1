"""The waterfall as a browser draws it: headless Chromium screenshots of the trace page
and of the debug toolbar's Wove panel, read back pixel by pixel.

The HTML tests check the markup; these check that the CSS really draws the bars: one
band of bar-coloured pixels per task row, in the colours waterfall.py gives each lane and
status. The toolbar's CSS resets every element under ``#djDebug`` (height, background),
so the panel screenshot is what shows the fragment's scoped rules win there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser import CHROMIUM, Image, bands, dev_server, hex_colour, read_png, screenshot
from servers import Server

from wove.contrib.traces.waterfall import COLOURS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"no {CHROMIUM}: `make chromium` installs Debian's package",
    ),
]

THREAD = hex_colour(COLOURS["thread"])
LOOP = hex_colour(COLOURS["loop"])
ERROR = hex_colour(COLOURS["error"])
WEAVE_SPAN = hex_colour("#e0e7ff")  # the weave row's bar (.row.weave .bar.span)


def _tall(found: list[tuple[int, int]], rows: int) -> list[tuple[int, int]]:
    return [(first, last) for first, last in found if last - first + 1 >= rows]


def _striped(image: Image, band: tuple[int, int]) -> bool:
    """Whether the rows just below ``band`` hold a loop-lane (teal) stripe under its red."""
    xs = [x for y in range(band[0], band[1] + 1) for x in image.xs(y, ERROR)]
    for y in range(band[1] + 1, min(band[1] + 4, image.height)):
        for x in range(min(xs) - 1, max(xs) + 2):
            r, g, b = image.pixel(x, y)
            if g - r > 40 and abs(g - b) < 40:  # teal, or teal blended with white
                return True
    return False


def _shoot(server: Server, path: str, png: Path, **options: int) -> Image:
    try:
        screenshot(server.url + path, png, **options)
    except BaseException:
        print(server.log())
        raise
    return read_png(png)


def test_the_trace_page_draws_a_bar_for_every_task(tmp_path: Path) -> None:
    server = dev_server(tmp_path, "wove_testproject.settings")
    try:
        assert server.get("/parallel/").status == 200  # three sync tasks
        # An async task that calls the ORM fails (and so does the request).
        assert server.get("/orm-in-async-task/").status == 500
        image = _shoot(server, "/wove/", tmp_path / "trace-page.png", width=1200, height=900)
    finally:
        server.stop()

    assert (image.width, image.height) == (1200, 900)
    # The legend shows every colour once, on its first line; the bars come below it.
    legend = bands(image, LOOP)[0]
    below = legend[1] + 1
    thread_bars = _tall([b for b in bands(image, THREAD) if b[0] > below], 10)
    assert len(thread_bars) == 3, bands(image, THREAD)  # authors, books, totals
    # The failed task: red, with the loop lane as a stripe along its bottom. Red is also
    # in text and tags; the stripe is what tells the bar. The task fails at once, so its
    # bar may be the 2 px minimum, whose rounded corners blend the stripe with the page.
    error_bars = [b for b in bands(image, ERROR) if b[0] > below and _striped(image, b)]
    assert len(error_bars) == 1, bands(image, ERROR)
    assert error_bars[0][1] - error_bars[0][0] + 1 >= 8
    assert len([b for b in bands(image, WEAVE_SPAN) if b[0] > below]) == 2  # one per weave
    # The requests are listed newest first: the failed one's bar is above the three.
    assert error_bars[0][1] < thread_bars[0][0]


def test_the_toolbar_panel_draws_the_bars_despite_the_toolbars_reset(tmp_path: Path) -> None:
    server = dev_server(tmp_path, "wove_testproject.settings_toolbar")
    try:
        # /toolbar-page/ runs /parallel/'s weave and clicks the Wove panel open; the
        # toolbar's script loads the panel from the toolbar's store (render_panel).
        image = _shoot(
            server, "/toolbar-page/", tmp_path / "panel.png", width=1400, height=900, wait_ms=5000
        )
        assert "panel_id=WovePanel" in server.log()
    finally:
        server.stop()

    panel = {"x_to": image.width - 240}  # the toolbar's sidebar is 240 px wide, on the right
    legend = bands(image, LOOP, **panel)
    assert legend, "the panel's legend is not drawn: is the panel open?"
    below = legend[0][1] + 1
    thread_bars = _tall([b for b in bands(image, THREAD, **panel) if b[0] > below], 10)
    assert len(thread_bars) == 3, bands(image, THREAD, **panel)
    assert len([b for b in bands(image, WEAVE_SPAN, **panel) if b[0] > below]) == 1
