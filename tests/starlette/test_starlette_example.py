"""The Starlette bookshop (example_project/starlette_app.py, `make demo-starlette`) is the
Django project's bookshop: its HTML pages and the links between them, Wove's speed-up
over the sequential version, orders whose receipt is detached (in both modes), the
trace pages, and a clear 400 or 404 (never a 500) for a bad order or an unknown author."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from starlette_support import client, run

APP_FILE = Path(__file__).resolve().parents[2] / "example_project" / "starlette_app.py"
AUTHORS = 6
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def bookshop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("BOOKSHOP_DB", str(tmp_path / "bookshop.sqlite3"))
    spec = importlib.util.spec_from_file_location("starlette_bookshop", APP_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "starlette_bookshop", module)  # as uvicorn imports it
    spec.loader.exec_module(module)
    module.RECEIPT_SECONDS = 0.05
    return module


def _links(page: httpx.Response) -> list[str]:
    return re.findall(r'href="([^"]+)"', page.text)


def _trace_link(page: httpx.Response) -> str:
    found = re.search(
        r'<a href="(/wove/[0-9a-f]+/)" id="trace-link">this request\'s trace', page.text
    )
    assert found, page.text
    return found.group(1)


def test_the_pages_and_the_links_between_them(bookshop: ModuleType) -> None:
    async def main() -> None:
        async with client(bookshop.app) as c:
            index = await c.get("/")
            assert index.status_code == 200
            links = _links(index)
            for version in ("", "sequential/", "wove/"):
                assert len(
                    [a for a in links if re.fullmatch(rf"/authors/[\w-]+/{version}", a)]
                ) == (AUTHORS), (version, links)
            assert {"/", "/orders/", "/wove/"} <= set(links)

            compare = await c.get("/authors/charles-dickens/")
            assert compare.status_code == 200
            timings = dict(re.findall(r'id="(sequential|wove)-ms">(\d+) ms', compare.text))
            assert set(timings) == {"sequential", "wove"}, compare.text
            # 3 queries and 6 prices at once, not in turn
            assert int(timings["wove"]) * 2 < int(timings["sequential"]), timings
            assert "Both versions built exactly the same page" in compare.text
            assert "Great Expectations" in compare.text
            assert "&euro;" in compare.text
            assert compare.text.count('class="bar"') >= 2 * 6  # both timelines drawn
            assert {
                "/authors/charles-dickens/sequential/",
                "/authors/charles-dickens/wove/",
            } <= set(_links(compare))
            trace_page = await c.get(_trace_link(compare))  # this request's own page
            assert trace_page.status_code == 200
            assert "GET /authors/charles-dickens/" in trace_page.text
            assert '<p class="nav"><a href="/wove/">' in trace_page.text  # back to the list
            assert "prices (6 items)" in trace_page.text

            for version in ("sequential", "wove"):
                alone = await c.get(f"/authors/jane-austen/{version}/")
                assert alone.status_code == 200, version
                assert "Persuasion" in alone.text
                assert float(alone.headers["x-author-page-ms"]) > 0
                assert "/authors/jane-austen/" in _links(alone)  # both, side by side
            wove_page = await c.get("/authors/jane-austen/wove/")
            assert "wove.prices;dur=" in wove_page.headers["server-timing"]
            assert "/authors/jane-austen/sequential/" in _links(wove_page)
            own = (await c.get(_trace_link(wove_page))).text
            assert "GET /authors/jane-austen/wove/" in own

            # The addresses the app used to serve (and `make demo-starlette` prints).
            old = await c.get("/authors/h-g-wells", params={"sequential": "1"})
            assert (old.status_code, old.headers["location"]) == (
                307,
                "/authors/h-g-wells/sequential/",
            )
            old = await c.get("/authors/h-g-wells")
            assert old.headers["location"] == "/authors/h-g-wells/wove/"

    run(main())


def test_an_unknown_author_or_order_is_a_404_page(bookshop: ModuleType) -> None:
    async def main() -> None:
        async with client(bookshop.app) as c:
            for path in (
                "/authors/nobody/",
                "/authors/nobody/sequential/",
                "/authors/nobody/wove/",
                "/orders/999/",
            ):
                page = await c.get(path)
                assert page.status_code == 404, (path, page.text)
                assert 'id="problem">No ' in page.text, page.text
                assert "/orders/" in _links(page)
            assert "No author &#x27;nobody&#x27;." in (await c.get("/authors/nobody/wove/")).text
            ordered = await c.post("/authors/nobody/order", params={"mode": "background"})
            assert ordered.status_code == 404
            book = await c.post(
                "/orders/", content="book=nope&email=a%40example.com&mode=fork", headers=FORM
            )
            assert book.status_code == 404
            assert "No book with ISBN" in book.text

    run(main())


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("book={isbn}&email=a%40example.com&mode=later", "must be &#x27;background&#x27; or"),
        ("book={isbn}&email=a%40example.com&mode=FORK", "not &#x27;FORK&#x27;"),
        ("book={isbn}&email=&mode=background", "needs the email address"),
    ],
)
def test_a_bad_order_is_a_400_page_and_places_nothing(
    bookshop: ModuleType, body: str, says: str
) -> None:
    async def main() -> None:
        async with client(bookshop.app) as c:
            isbn = _first_isbn((await c.get("/orders/")).text)
            bad = await c.post("/orders/", content=body.format(isbn=isbn), headers=FORM)
            assert bad.status_code == 400, bad.text
            assert says in bad.text
            old = await c.post("/authors/jane-austen/order", params={"mode": "thread"})
            assert old.status_code == 400
            assert "None yet." in (await c.get("/orders/")).text

    run(main())


def _first_isbn(orders_page: str) -> str:
    found = re.search(r'<option value="(\d{13})">', orders_page)
    assert found, orders_page
    return found.group(1)


@pytest.mark.parametrize("mode", ["background", "fork"])
def test_an_order_detaches_its_receipt_until_after_the_response(
    bookshop: ModuleType, mode: str
) -> None:
    async def main() -> None:
        async with client(bookshop.app) as c:
            isbn = _first_isbn((await c.get("/orders/")).text)
            placed = await c.post(
                "/orders/", content=f"book={isbn}&email=a%40example.com&mode={mode}", headers=FORM
            )
            assert placed.status_code == 303, placed.text
            location = placed.headers["location"]
            assert re.fullmatch(r"/orders/\d+/", location)
            deadline = time.monotonic() + 30
            while "receipt sent" not in (page := await c.get(location)).text:
                assert time.monotonic() < deadline, page.text
                await asyncio.sleep(0.05)
            started = re.search(r'id="started-after">\+([\d.]+) s<', page.text)
            assert started, page.text
            assert float(started.group(1)) >= 0  # after the order was placed
            process = re.search(r"process (\d+); this server is process (\d+)", page.text)
            assert process, page.text
            assert (process.group(1) == process.group(2)) is (mode == "background")
            assert location in (await c.get("/orders/")).text  # listed, with a link

            detached: list[dict[str, object]] = []
            while not detached:  # a forked child reports its trace when it is done
                traces = (await c.get("/wove/traces.json")).json()["traces"]
                detached = [t for t in traces if t["method"] == "DETACH"]
                assert time.monotonic() < deadline, traces
                await asyncio.sleep(0.05)
            (trace,) = detached
            assert trace["path"] == "send_receipt after POST /orders/"
            records = trace["records"]
            assert isinstance(records, list)
            (record,) = records
            # Labelled with the endpoint's detach() call, not a file of wove/contrib.
            lines = APP_FILE.read_text().splitlines()
            line = 1 + next(
                n
                for n, text in enumerate(lines)
                if "detach(send_receipt, order_id, mode=mode)" in text
            )
            assert record["weave"] == f"{APP_FILE}:{line}"

    run(main())
