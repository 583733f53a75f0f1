"""The adapter under a real uvicorn, over real sockets: the timing facts the in-process
transport cannot show (it waits for the whole ASGI call, detached work included)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import starlette_testapp
from uvicorn_server import Served, uvicorn_server

pytestmark = pytest.mark.slow

TASKS = starlette_testapp.TASKS


def get(served: Served, path: str) -> tuple[http.client.HTTPResponse, bytes, float]:
    """One request on its own connection; the response, its body, and when the body's
    last byte had been read (time.monotonic())."""
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        return response, body, time.monotonic()
    finally:
        connection.close()


def eventually(probe: Callable[[], Any], seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def traces(served: Served) -> list[dict[str, Any]]:
    response, body, _ = get(served, "/wove/traces.json")
    assert response.status == 200, body
    listed: list[dict[str, Any]] = json.loads(body)["traces"]
    return listed


def test_server_timing_arrives_over_the_wire(tmp_path: Path) -> None:
    with uvicorn_server(tmp_path, server_timing=True) as served:
        response, _body, _ = get(served, "/async-weave")
        assert response.status == 200, served.log()
        timing = response.getheader("Server-Timing") or ""
        assert timing.startswith("wove;dur="), served.log()
        for name in TASKS:
            assert f"wove.{name};dur=" in timing
        (trace,) = traces(served)
        assert {r["task"] for r in trace["records"]} == TASKS
    # uvicorn re-raises the SIGTERM it handled; the lifespan's shutdown ran cleanly.
    assert "Application shutdown complete." in served.log()
    assert "Traceback" not in served.log()


@pytest.mark.parametrize("mode", ["background", "fork"])
def test_the_client_has_the_response_before_detached_work_ends(tmp_path: Path, mode: str) -> None:
    marker = tmp_path / f"{mode}.json"
    delay = 1.0
    with uvicorn_server(tmp_path) as served:
        sent = time.monotonic()
        response, body, received = get(
            served, f"/detach?kind=marker&mode={mode}&path={marker}&delay={delay}"
        )
        assert (response.status, body) == (200, b"sent"), served.log()
        assert received - sent < delay * 0.8, served.log()
        assert not marker.exists()  # the work is still running
        assert eventually(marker.exists, 15), served.log()
        written = json.loads(marker.read_text())
        assert written["at"] - time.time() < 1
        if mode == "fork":
            assert written["pid"] != served.process.pid  # a detached child
        else:
            assert written["pid"] == served.process.pid

        def detached() -> list[dict[str, Any]]:
            return [t for t in traces(served) if t["method"] == "DETACH"]

        (trace,) = eventually(detached, 15)  # a forked child reports back to the server
        assert trace["path"] == "write_marker after GET /detach"
        assert trace["error"] is None
        assert [(r["task"], r["status"]) for r in trace["records"]] == [("write_marker", "ok")]
        (record,) = trace["records"]
        assert record["duration_ms"] >= delay * 1000 * 0.9


def _children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(name))
    return found


def test_a_forked_detach_goes_through_the_fork_server_the_app_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WOVE_TEST_FORK_SERVER", "1")
    marker = tmp_path / "fork.json"
    with uvicorn_server(tmp_path) as served:
        [fork_server] = _children(served.process.pid)
        response, body, _ = get(served, f"/detach?kind=marker&mode=fork&path={marker}&delay=0")
        assert (response.status, body) == (200, b"sent"), served.log()
        assert eventually(marker.exists, 15), served.log()
        written = json.loads(marker.read_text())
        assert written["pid"] not in (served.process.pid, fork_server)

        def detached() -> list[dict[str, Any]]:
            return [t for t in traces(served) if t["method"] == "DETACH"]

        (trace,) = eventually(detached, 15)  # the server's child reported back
        assert trace["error"] is None, trace
        assert [(r["task"], r["status"]) for r in trace["records"]] == [("write_marker", "ok")]
    assert eventually(lambda: not Path(f"/proc/{fork_server}").exists(), 15), (
        "the fork server outlived uvicorn"
    )


def test_200_concurrent_requests_all_succeed_with_complete_traces(tmp_path: Path) -> None:
    """Sync and async endpoints, each running a weave of sync and async tasks."""
    paths = ["/async-weave?delay=0.05", "/sync-weave?delay=0.05"] * 100

    async def hammer(served: Served) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=served.url, limits=limits, timeout=60) as c:
            return await asyncio.gather(*(c.get(path) for path in paths))

    with uvicorn_server(tmp_path, server_timing=True, trace_store_size=1000) as served:
        replies = asyncio.run(hammer(served))
        assert [r.status_code for r in replies] == [200] * 200, served.log()
        for reply in replies:
            assert reply.json()["thread"].startswith("wove-")
            assert reply.json()["loop"] == "loop"
            for name in TASKS:
                assert f"wove.{name};dur=" in reply.headers["server-timing"]
        listed = traces(served)
        assert len(listed) == 200
        assert sorted(t["path"] for t in listed) == sorted(p.split("?")[0] for p in paths)
        for trace in listed:
            assert trace["status"] == 200
            assert trace["error"] is None
            assert sorted(r["task"] for r in trace["records"]) == sorted(TASKS)
            assert all(r["status"] == "ok" for r in trace["records"])
    assert "Application shutdown complete." in served.log()
    assert "Traceback" not in served.log()
