"""The WOVE settings dict, the system checks, and who may see the trace pages."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.checks import Error, Warning
from django.core.checks.registry import registry
from django.test import Client, override_settings

import wove
from wove.contrib.django import conf, connections
from wove.contrib.django.recording import store


def test_defaults_are_documented_and_applied() -> None:
    options = conf.load({}, debug=False)
    assert options.record is True
    assert options.server_timing is False
    assert conf.load({}, debug=True).server_timing is True
    assert options.trace_store_size == 100
    assert options.atomic == "thread_sensitive"
    assert options.detach_mode == "background"
    assert options.fork_start_timeout == 5.0
    assert conf.load({"FORK_START_TIMEOUT": None}, debug=False).fork_start_timeout is None
    assert options.trace_access is conf.staff_or_debug
    assert (options.max_sql_statements, options.sql_params) == (50, False)
    assert conf.load({}, debug=True).sql_params is True  # parameters only with DEBUG


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"SERVER_TIMINGS": True}, "unknown key 'SERVER_TIMINGS'; did you mean 'SERVER_TIMING'?"),
        ({"RECORD": "yes"}, "settings.WOVE['RECORD'] must be True or False, got 'yes'"),
        ({"TRACE_STORE_SIZE": 0}, "must be an int >= 1, got 0"),
        ({"MAX_THREADS": True}, "must be an int >= 1, got True"),
        ({"MAX_SQL_STATEMENTS": -1}, "settings.WOVE['MAX_SQL_STATEMENTS'] must be an int >= 0"),
        ({"ATOMIC": "serial"}, "must be one of 'thread_sensitive', 'parallel', got 'serial'"),
        ({"DETACH_MODE": "later"}, "must be one of 'background', 'fork', 'tasks', got 'later'"),
        ({"FORK_START_TIMEOUT": 0}, "['FORK_START_TIMEOUT'] must be a number of seconds > 0, or"),
        ({"FORK_START_TIMEOUT": "5"}, "or None for no limit, got '5'"),
        ({"TRACE_ACCESS": "no.such.function"}, "cannot be imported"),
        ({"TRACE_ACCESS": 3}, "must be None, a function taking the request"),
        (["RECORD"], "settings.WOVE must be a dict, got list"),
    ],
)
def test_bad_settings_say_what_was_expected(raw: object, message: str) -> None:
    with pytest.raises(conf.WoveSettingsError) as raised:
        conf.load(raw, debug=False)
    assert message in str(raised.value)
    assert isinstance(raised.value, wove.WoveError)


def _run_checks() -> list[object]:
    return list(registry.run_checks(tags=None))


def test_the_system_check_reports_a_bad_setting_and_a_missing_middleware() -> None:
    with override_settings(WOVE={"ATOMC": "parallel"}):
        errors = [m for m in _run_checks() if isinstance(m, Error) and m.id == "wove.E001"]
    assert len(errors) == 1
    assert "did you mean 'ATOMIC'" in errors[0].msg
    with override_settings(MIDDLEWARE=[]):
        warnings = [m for m in _run_checks() if isinstance(m, Warning) and m.id == "wove.W001"]
    assert len(warnings) == 1
    assert not [m for m in _run_checks() if getattr(m, "id", "").startswith("wove.")]


def test_the_transaction_rule_follows_the_atomic_setting() -> None:
    assert wove.settings().thread_sensitive is connections.in_transaction
    with override_settings(WOVE={"ATOMIC": "parallel"}):
        assert wove.settings().thread_sensitive is False
    assert wove.settings().thread_sensitive is connections.in_transaction


def test_max_threads_reaches_the_core() -> None:
    try:
        with override_settings(WOVE={"MAX_THREADS": 7}):
            assert wove.settings().max_threads == 7
    finally:
        wove.configure(max_threads=256)


@pytest.mark.django_db(transaction=True)
class TestTracePages:
    @pytest.fixture(autouse=True)
    def _one_trace(self, client: Client) -> None:
        store().clear()
        client.get("/parallel/")
        [self.trace] = store().recent()

    def _urls(self) -> list[str]:
        return [
            "/wove/",
            "/wove/traces.json",
            f"/wove/{self.trace.id}/",
            f"/wove/{self.trace.id}.json",
        ]

    def test_anonymous_users_get_404_without_debug(self, client: Client) -> None:
        with override_settings(DEBUG=False):
            assert [client.get(url).status_code for url in self._urls()] == [404] * 4

    def test_staff_users_see_the_pages(self, client: Client) -> None:
        staff = User.objects.create_user("staff", password="x", is_staff=True)
        client.force_login(staff)
        with override_settings(DEBUG=False):
            responses = [client.get(url) for url in self._urls()]
        assert [r.status_code for r in responses] == [200] * 4
        assert b"/parallel/" in responses[0].content
        assert {r["task"] for r in responses[3].json()["records"]} == {"authors", "books", "totals"}
        assert "no-cache" in responses[0]["Cache-Control"]

    def test_a_logged_in_user_who_is_not_staff_is_refused(self, client: Client) -> None:
        client.force_login(User.objects.create_user("someone", password="x"))
        with override_settings(DEBUG=False):
            assert client.get("/wove/").status_code == 404

    def test_debug_opens_the_pages_and_a_custom_check_replaces_the_rule(
        self, client: Client
    ) -> None:
        with override_settings(DEBUG=True):
            assert client.get("/wove/").status_code == 200
        with override_settings(DEBUG=True, WOVE={"TRACE_ACCESS": lambda request: False}):
            assert client.get("/wove/").status_code == 404

    def test_an_unknown_trace_is_404(self, client: Client) -> None:
        with override_settings(DEBUG=True):
            assert client.get("/wove/nothere/").status_code == 404
            assert client.get("/wove/nothere.json").status_code == 404


def test_the_old_detach_mode_name_still_loads_and_the_system_check_says_so() -> None:
    """DETACH_MODE "thread" was renamed "background"; it still works, with a warning."""
    assert conf.load({"DETACH_MODE": "thread"}, debug=False).detach_mode == "background"
    with override_settings(WOVE={"DETACH_MODE": "thread"}):
        found = [m for m in _run_checks() if isinstance(m, Warning) and m.id == "wove.W003"]
    assert len(found) == 1
    assert "'background'" in found[0].msg
    with override_settings(WOVE={"DETACH_MODE": "background"}):
        assert not [m for m in _run_checks() if getattr(m, "id", "") == "wove.W003"]
