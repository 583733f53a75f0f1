"""WOVE["ENVIRONMENTS"]: remote environments configured in settings, registered with the
core when the app is ready and again whenever the settings change, and checked at
startup (wove.E001). Configuration only: no broker or worker is needed here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from django.core.checks import Error
from django.core.checks.registry import registry
from django.test import override_settings

import wove
from wove import InvalidOptionError
from wove.contrib.celery import CeleryEnv, EnvelopeError, Keyring
from wove.contrib.celery.envelope import derive_key_id, open_envelope, purpose_key, seal
from wove.contrib.django import conf
from wove.environments import get_env

#: The Celery app the settings name by dotted path (never connected to).
app = Celery("wove-env-tests", broker="memory://", backend="cache+memory://", set_as_current=False)
APP_PATH = f"{__name__}.app"

KEY = "k" * 40
NEW_SECRET = "n" * 40
OLD_SECRET = "o" * 40


def _derived(secret: str) -> bytes:
    """The signing key Wove makes of a Django secret for envelopes."""
    return purpose_key(secret, conf.ENVELOPE_PURPOSE)


def _errors() -> list[Error]:
    return [
        message
        for message in registry.run_checks(tags=None)
        if isinstance(message, Error) and message.id == "wove.E001"
    ]


def _not_registered(name: str = "celery") -> bool:
    try:
        get_env(name)
    except InvalidOptionError:
        return True
    return False


@pytest.fixture(autouse=True)
def _no_environment_before_or_after() -> Iterator[None]:
    assert _not_registered()
    yield
    assert _not_registered()


def test_an_environment_in_settings_is_registered_while_they_are_in_force() -> None:
    settings: dict[str, Any] = {
        "APP": APP_PATH,
        "KEYS": [KEY],
        "QUEUE": "remote-tasks",
        "MAX_AGE": 600,
        "MAX_PAYLOAD": 4096,
        "TERMINATE_ON_CANCEL": False,
    }
    with override_settings(WOVE={"ENVIRONMENTS": {"celery": settings}}):
        env = get_env("celery")
        assert isinstance(env, CeleryEnv)
        assert isinstance(env, wove.RemoteEnv)
        assert env.app is app  # the dotted path, imported
        assert env.queue == "remote-tasks"
        assert env.max_age == 600.0
        assert env.max_payload == 4096
        assert env.terminate_on_cancel is False
        assert env.keyring.key_ids == (derive_key_id(KEY.encode()),)
        assert _errors() == []
    assert _not_registered()


def test_the_defaults_of_an_environment() -> None:
    with override_settings(WOVE={"ENVIRONMENTS": {"celery": {"APP": app, "KEYS": [KEY]}}}):
        env = get_env("celery")
        assert isinstance(env, CeleryEnv)
        assert env.app is app  # an app object works as well as its path
        assert env.queue is None
        assert env.max_age == float(conf.ENVIRONMENT_DEFAULTS["MAX_AGE"])
        assert env.max_payload == conf.ENVIRONMENT_DEFAULTS["MAX_PAYLOAD"]
        assert env.terminate_on_cancel is True


def test_several_environments_each_get_their_name() -> None:
    environments = {
        "celery": {"APP": APP_PATH, "KEYS": [KEY]},
        "batch": {"APP": APP_PATH, "KEYS": [KEY], "QUEUE": "batch"},
    }
    with override_settings(WOVE={"ENVIRONMENTS": environments}):
        celery_env, batch_env = get_env("celery"), get_env("batch")
        assert isinstance(celery_env, CeleryEnv)
        assert isinstance(batch_env, CeleryEnv)
        assert (celery_env.queue, batch_env.queue) == (None, "batch")
    assert _not_registered("batch")


def test_a_settings_change_registers_the_new_environment() -> None:
    outer = {"ENVIRONMENTS": {"celery": {"APP": APP_PATH, "KEYS": [KEY], "QUEUE": "first"}}}
    inner = {"ENVIRONMENTS": {"celery": {"APP": APP_PATH, "KEYS": [KEY], "QUEUE": "second"}}}
    with override_settings(WOVE=outer):
        first = get_env("celery")
        with override_settings(WOVE=inner):
            second = get_env("celery")
            assert isinstance(second, CeleryEnv)
            assert second.queue == "second"
        again = get_env("celery")
        assert isinstance(again, CeleryEnv)
        assert again.queue == "first"
    assert first is not second


def test_a_project_env_of_another_name_is_left_alone() -> None:
    class Elsewhere:
        async def run(self, call: wove.RemoteCall) -> Any:
            return None

        def detach(self, weave: wove.DetachedWeave) -> str:
            return "id"

    mine = Elsewhere()
    remove = wove.register_env("mine", mine)
    try:
        with override_settings(WOVE={"ENVIRONMENTS": {"celery": {"APP": APP_PATH, "KEYS": [KEY]}}}):
            assert get_env("mine") is mine
        assert get_env("mine") is mine
    finally:
        remove()


@override_settings(SECRET_KEY=NEW_SECRET, SECRET_KEY_FALLBACKS=[OLD_SECRET])
def test_keys_default_to_keys_derived_from_the_secret_key_and_its_fallbacks() -> None:
    with override_settings(WOVE={"ENVIRONMENTS": {"celery": {"APP": APP_PATH}}}):
        env = get_env("celery")
        assert _errors() == []
    assert isinstance(env, CeleryEnv)
    new_id, old_id = derive_key_id(_derived(NEW_SECRET)), derive_key_id(_derived(OLD_SECRET))
    assert env.keyring.key_ids == (new_id, old_id)
    assert env.keyring.signing_id == new_id
    # The raw secrets are never the HMAC keys: the derived keys are other bytes...
    assert env.keyring.secret(new_id) not in (NEW_SECRET.encode(), None)
    assert env.keyring.secret(old_id) not in (OLD_SECRET.encode(), None)
    # ...so an envelope signed with the raw SECRET_KEY is refused.
    raw = seal(Keyring.from_config([NEW_SECRET]), "call", "m-0", b"raw")
    with pytest.raises(EnvelopeError) as refused_raw:
        open_envelope(env.keyring, raw, kind="call", max_age=60)
    assert refused_raw.value.reason == "unknown-key"

    # Rotation: what the old key sealed still verifies...
    old_only = Keyring.from_config([_derived(OLD_SECRET)])
    sealed_before = seal(old_only, "call", "m-1", b"before the rotation")
    assert open_envelope(env.keyring, sealed_before, kind="call", max_age=60) == (
        b"before the rotation"
    )
    # ...and what this process seals now is signed with SECRET_KEY's key.
    sealed_now = seal(env.keyring, "call", "m-2", b"after")
    assert sealed_now["kid"] == new_id
    new_only = Keyring.from_config([_derived(NEW_SECRET)])
    assert open_envelope(new_only, sealed_now, kind="call", max_age=60) == b"after"
    with pytest.raises(EnvelopeError) as refused:
        open_envelope(old_only, sealed_now, kind="call", max_age=60)
    assert refused.value.reason == "unknown-key"


def test_explicit_keys_are_used_as_given() -> None:
    with override_settings(WOVE={"ENVIRONMENTS": {"celery": {"APP": APP_PATH, "KEYS": [KEY]}}}):
        env = get_env("celery")
    assert isinstance(env, CeleryEnv)
    assert env.keyring.key_ids == (derive_key_id(KEY.encode()),)
    assert env.keyring.secret(derive_key_id(KEY.encode())) == KEY.encode()


def test_the_derivation_is_purpose_specific_and_stable() -> None:
    assert _derived(NEW_SECRET) == _derived(NEW_SECRET)
    assert len(_derived(NEW_SECRET)) == 32
    assert purpose_key(NEW_SECRET, "another purpose") != _derived(NEW_SECRET)
    assert _derived(OLD_SECRET) != _derived(NEW_SECRET)


def test_a_short_secret_key_without_keys_is_reported_with_where_the_keys_came_from() -> None:
    # The test project's SECRET_KEY is shorter than the 32 bytes a key needs.
    with override_settings(WOVE={"ENVIRONMENTS": {"celery": {"APP": APP_PATH}}}):
        [error] = _errors()
        assert _not_registered()  # a bad setting registers nothing
    assert "settings.WOVE['ENVIRONMENTS']['celery'] (KEYS defaults to SECRET_KEY)" in error.msg
    assert "shorter than the minimum of 32" in error.msg


def test_a_short_key_given_in_keys_is_reported_without_the_secret_key_hint() -> None:
    with override_settings(WOVE={"ENVIRONMENTS": {"celery": {"APP": APP_PATH, "KEYS": ["x"]}}}):
        [error] = _errors()
    assert "shorter than the minimum of 32" in error.msg
    assert "SECRET_KEY" not in error.msg


@pytest.mark.parametrize(
    ("environments", "message"),
    [
        (
            {"celery": {"APP": APP_PATH, "KEYS": [KEY], "QUEUES": "q"}},
            "unknown key 'QUEUES'; did you mean 'QUEUE'?",
        ),
        (
            {"celery": {"ENGINE": "rq", "APP": APP_PATH, "KEYS": [KEY]}},
            "settings.WOVE['ENVIRONMENTS']['celery']['ENGINE'] must be 'celery', got 'rq'",
        ),
        (["celery"], "settings.WOVE['ENVIRONMENTS'] must be a dict of remote environments"),
        ({"celery": "proj.celery.app"}, "['celery'] must be a dict of its settings"),
        ({"": {"APP": APP_PATH, "KEYS": [KEY]}}, "an environment's name must be a non-empty"),
        ({"celery": {"APP": APP_PATH, "KEYS": KEY}}, "wrap it in a list"),
        ({"celery": {"APP": APP_PATH, "KEYS": [KEY], "MAX_AGE": "1h"}}, "max_age must be"),
        ({"celery": {"APP": APP_PATH, "KEYS": [KEY], "QUEUE": ""}}, "queue must be"),
        (
            {"celery": {"APP": APP_PATH, "KEYS": [KEY], "TERMINATE_ON_CANCEL": 1}},
            "terminate_on_cancel must be True or False",
        ),
        ({"celery": {"APP": 3, "KEYS": [KEY]}}, "CeleryEnv's app must be a Celery app"),
    ],
)
def test_a_bad_environment_setting_is_a_system_check_error(
    environments: object, message: str
) -> None:
    with override_settings(WOVE={"ENVIRONMENTS": environments}):
        errors = _errors()
        assert _not_registered()
    assert len(errors) == 1, errors
    assert message in errors[0].msg
    with pytest.raises(conf.WoveSettingsError) as raised:
        conf.load({"ENVIRONMENTS": environments}, debug=False)
    assert message in str(raised.value)
    assert isinstance(raised.value, wove.WoveError)


def test_the_environment_keys_are_documented() -> None:
    assert set(conf.ENVIRONMENT_DEFAULTS) == {
        "ENGINE",
        "APP",
        "KEYS",
        "MAX_AGE",
        "MAX_PAYLOAD",
        "QUEUE",
        "TERMINATE_ON_CANCEL",
        "LEASE",
        "HEARTBEAT",
    }
    assert conf.DEFAULTS["ENVIRONMENTS"] == {}
    assert conf.load({}, debug=False).environments == {}


@override_settings(SECRET_KEY=NEW_SECRET)
def test_a_secret_key_change_alone_rebuilds_the_default_keys() -> None:
    with override_settings(WOVE={"ENVIRONMENTS": {"celery": {"APP": APP_PATH}}}):
        assert get_env("celery").keyring.signing_id == derive_key_id(_derived(NEW_SECRET))
        with override_settings(SECRET_KEY=OLD_SECRET):
            env = get_env("celery")
            assert isinstance(env, CeleryEnv)
            assert env.keyring.signing_id == derive_key_id(_derived(OLD_SECRET))


def test_an_app_path_that_cannot_be_imported_is_a_system_check_error() -> None:
    missing = {"APP": "no_such_project.celery.app", "KEYS": [KEY]}
    with override_settings(WOVE={"ENVIRONMENTS": {"celery": missing}}):
        [error] = _errors()
    assert "settings.WOVE['ENVIRONMENTS']['celery']['APP']" in error.msg
    assert "cannot be imported" in error.msg


def test_lease_and_heartbeat_come_from_the_settings() -> None:
    options = {"APP": APP_PATH, "KEYS": [KEY], "LEASE": 4.0, "HEARTBEAT": 1.0}
    with override_settings(WOVE={"ENVIRONMENTS": {"celery": options}}):
        env = get_env("celery")
    assert isinstance(env, CeleryEnv)
    assert (env.lease, env.heartbeat) == (4.0, 1.0)


def test_a_heartbeat_not_below_the_lease_is_a_system_check_error() -> None:
    options = {"APP": APP_PATH, "KEYS": [KEY], "LEASE": 1.0, "HEARTBEAT": 1.0}
    with override_settings(WOVE={"ENVIRONMENTS": {"celery": options}}):
        [error] = _errors()
    assert "must be shorter than lease" in error.msg
