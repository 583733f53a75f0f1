"""The Starlette bookshop (example_project/starlette_app.py, `make demo-starlette`)
keeps working: its pages, Wove's speed-up over the sequential version, the detached
receipt, and the trace pages."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from starlette_support import client, run

APP_FILE = Path(__file__).resolve().parents[2] / "example_project" / "starlette_app.py"


@pytest.fixture
def bookshop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("BOOKSHOP_DB", str(tmp_path / "bookshop.sqlite3"))
    spec = importlib.util.spec_from_file_location("starlette_bookshop", APP_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bookshop_pages(bookshop: ModuleType) -> None:
    async def main() -> None:
        async with client(bookshop.app) as c:
            index = await c.get("/")
            wove_page = await c.get("/authors/charles-dickens")
            sequential = await c.get("/authors/charles-dickens", params={"sequential": "1"})
            missing = await c.get("/authors/nobody")
            ordered = await c.post("/authors/jane-austen/order", params={"mode": "background"})
            receipt = await c.get(f"/receipts/{ordered.json()['receipt']}")
            traces = (await c.get("/wove/traces.json")).json()["traces"]
        assert index.status_code == 200
        assert 'href="/authors/charles-dickens"' in index.text
        assert wove_page.json() == sequential.json()
        assert wove_page.json()["name"] == "Charles Dickens"
        assert len(wove_page.json()["books"]) == 6
        fast = float(wove_page.headers["x-elapsed-ms"])
        slow = float(sequential.headers["x-elapsed-ms"])
        assert fast * 2 < slow, (fast, slow)  # 3 queries and 6 prices at once, not in turn
        assert "wove.priced;dur=" in wove_page.headers["server-timing"]
        assert missing.status_code == 404
        sent = receipt.json()
        assert sent["started_at"] >= ordered.json()["at"]  # after the response was made
        assert sent["sent_at"] > sent["started_at"]
        assert sent["pid"] == sent["server_pid"]
        paths = [t["path"] for t in traces]
        assert "/authors/charles-dickens" in paths
        assert "send_receipt after POST /authors/jane-austen/order" in paths

    bookshop.RECEIPT_SECONDS = 0.05
    run(main())
