"""The waterfall as a browser draws it: headless Chromium screenshots of the trace page
and of the debug toolbar's Wove panel, read back pixel by pixel.

The HTML tests check the markup; these check that the CSS really draws the bars: one
band of bar-coloured pixels per task row, in the colours waterfall.py gives each lane and
status. The toolbar's CSS resets every element under ``#djDebug`` (height, background),
so the panel screenshot is what shows the fragment's scoped rules win there.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from browser import CHROMIUM, Image, bands, dev_server, dump_dom, hex_colour, read_png, screenshot
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


CANCELLED = hex_colour(COLOURS["cancelled"])
MARKER_EDGE = (0x4B, 0x55, 0x63)  # .bar.marker's border
SCREENSHOT = Path("/tmp/wove-trace-sql-cancelled.png")  # kept for a look, not committed


def test_a_request_page_shows_each_tasks_sql_and_the_task_that_never_started(
    tmp_path: Path,
) -> None:
    """A weave whose task fails after another ran its queries: the dependent that never
    started is a grey marker where the weave ended, and the statements are listed, open,
    under the waterfall (needs the engine's records of tasks it never started)."""
    server = dev_server(tmp_path, "wove_testproject.settings")
    try:
        answer = server.get("/sql-and-cancelled/?n=3")
        assert answer.status == 200, answer.body
        trace_id = answer.json()["trace"]
        url = f"/wove/{trace_id}/"
        image = _shoot(server, url, tmp_path / "sql-cancelled.png", width=1200, height=1100)
        dom = dump_dom(server.url + url, tmp_path / "dom-profile")
    finally:
        server.stop()
    shutil.copyfile(tmp_path / "sql-cancelled.png", SCREENSHOT)

    # DOM: the marker of the task that never started, and the statements, shown open.
    never = re.search(r'title="never">never</div><div class="track">(.*?)</div></div>', dom, re.S)
    assert never, dom
    assert 'class="bar lane-thread status-cancelled marker wl-' in never.group(1)
    sql = re.search(r'<details class="sql-task" open="">(.*?)</details>', dom, re.S)
    assert sql, dom
    assert "<code>lookups</code> · 3 statements ·" in sql.group(1)
    texts = re.findall(r'<code class="sql-text">(.*?)</code>', sql.group(1))
    assert len(texts) == 3
    assert all(t.startswith('SELECT COUNT(*) AS "__count" FROM "shop_author"') for t in texts)
    params = re.findall(r'<code class="sql-params">(.*?)</code>', sql.group(1))
    assert params == [f"('&lt;b&gt;{n}&lt;/b&gt;',)" for n in range(3)]  # DEBUG is on

    # Pixels: below the legend (which shows one marker too), a grey marker with its dark
    # edge on the `never` row: a small block, not a bar across the track.
    legend = bands(image, LOOP)[0]
    below = legend[1] + 1
    markers = []
    for first, last in bands(image, CANCELLED, least=4):
        if first <= below:
            continue
        xs = image.xs((first + last) // 2, CANCELLED)
        if (
            xs
            and max(xs) - min(xs) <= 8
            and MARKER_EDGE
            in {
                image.pixel(min(xs) - 1, (first + last) // 2),
                image.pixel(max(xs) + 1, (first + last) // 2),
            }
        ):
            markers.append((first, last, min(xs)))
    assert markers, bands(image, CANCELLED)
    # It stands where the weave ended: right of where the failed task's bar starts.
    error_bars = [b for b in bands(image, ERROR) if b[0] > below and b[1] - b[0] >= 8]
    assert error_bars, bands(image, ERROR)
    error_x = min(image.xs((error_bars[0][0] + error_bars[0][1]) // 2, ERROR))
    assert any(x > error_x for _, _, x in markers), (markers, error_x)
