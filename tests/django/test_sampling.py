"""WOVE["TRACE_SAMPLE_RATE"] and friends: a share of requests recorded in full; a failed
or slow request always kept; bad values reported by the system check."""

from __future__ import annotations

import pytest
from django.core.checks import Error
from django.core.checks.registry import registry
from django.test import Client, override_settings

from wove.contrib.django import conf
from wove.contrib.django.recording import recorder, store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _empty_store() -> None:
    store().clear()


def test_the_defaults_record_every_request() -> None:
    options = conf.load({}, debug=False)
    assert options.trace_sample_rate == 1.0
    assert options.trace_slow_ms == 500.0
    assert options.trace_unsampled_timings is True


def test_rate_zero_drops_a_fast_request_and_sends_no_header(client: Client) -> None:
    with override_settings(WOVE={"TRACE_SAMPLE_RATE": 0.0, "SERVER_TIMING": True}):
        response = client.get("/parallel/")
        assert response.status_code == 200
        assert "Server-Timing" not in response
        assert response.wsgi_request.wove_trace is None  # type: ignore[attr-defined]
        assert response.wsgi_request.wove_trace_id  # type: ignore[attr-defined]
        assert store().recent() == []


def test_rate_zero_keeps_a_failed_request() -> None:
    client = Client(raise_request_exception=False)
    with override_settings(WOVE={"TRACE_SAMPLE_RATE": 0.0}):
        response = client.get("/detach-raises/")
        assert response.status_code == 500
        (trace,) = store().recent()
        assert trace.status == 500


def test_rate_zero_keeps_a_slow_request(client: Client) -> None:
    with override_settings(WOVE={"TRACE_SAMPLE_RATE": 0.0, "TRACE_SLOW_MS": 0}):
        client.get("/parallel/")
        (trace,) = store().recent()
        assert {r.task for r in trace.records} == {"authors", "books", "totals"}
        assert all(not r.extra for r in trace.records)  # not sampled: timings only


def test_rate_one_keeps_every_request_with_its_queries(client: Client) -> None:
    with override_settings(WOVE={"TRACE_SAMPLE_RATE": 1}):
        client.get("/parallel/")
        client.get("/parallel/")
        traces = store().recent()
        assert len(traces) == 2
        tasks = {r.task: r for r in traces[0].records}
        assert tasks["authors"].extra["queries"] == 1


def test_a_sampling_change_keeps_the_store() -> None:
    before = store()
    with override_settings(WOVE={"TRACE_SAMPLE_RATE": 0.5, "TRACE_SLOW_MS": None}):
        assert store() is before
        assert (recorder().sample_rate, recorder().slow_ms) == (0.5, None)
    assert recorder().sample_rate == 1.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"TRACE_SAMPLE_RATE": 1.5}, "must be a number from 0.0"),
        ({"TRACE_SAMPLE_RATE": -0.1}, "must be a number from 0.0"),
        ({"TRACE_SAMPLE_RATE": "0.1"}, "must be a number from 0.0"),
        ({"TRACE_SAMPLE_RATE": True}, "must be a number from 0.0"),
        ({"TRACE_SLOW_MS": -1}, "must be None (never) or milliseconds >= 0"),
        ({"TRACE_SLOW_MS": "500"}, "must be None (never) or milliseconds >= 0"),
        ({"TRACE_SLOW_MS": float("nan")}, "must be None (never) or milliseconds >= 0"),
        ({"TRACE_UNSAMPLED_TIMINGS": 1}, "must be True or False"),
    ],
)
def test_bad_sampling_settings_are_reported(raw: dict[str, object], message: str) -> None:
    with pytest.raises(conf.WoveSettingsError) as raised:
        conf.load(raw, debug=False)
    assert message in str(raised.value)
    with override_settings(WOVE=raw):
        errors = [
            m
            for m in registry.run_checks(tags=None)
            if isinstance(m, Error) and m.id == "wove.E001"
        ]
    assert len(errors) == 1
    assert message in errors[0].msg
