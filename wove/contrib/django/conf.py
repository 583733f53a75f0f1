"""The ``WOVE`` settings dict, read once, checked, and re-read when a test overrides it.

Every key is optional; the defaults are what a Django user would expect with nothing
set: traces recorded and kept in memory, ``Server-Timing`` only with ``DEBUG``, the trace
page for staff (or anyone with ``DEBUG``), connection hygiene and query counting on (the
first 50 statements of each task kept, their parameters only with ``DEBUG``), and
sync tasks inside a transaction kept on the request's thread.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import HttpRequest
from django.utils.module_loading import import_string

from wove import RemoteEnv, WoveError

AtomicPolicy = Literal["thread_sensitive", "parallel"]
DetachMode = Literal["background", "fork", "tasks"]
RenamedDetachMode = Literal["thread"]

ATOMIC_CHOICES: tuple[AtomicPolicy, ...] = ("thread_sensitive", "parallel")
DETACH_MODES: tuple[DetachMode, ...] = ("background", "fork", "tasks")
#: Old names still accepted (detach() warns, and so does ``manage.py check`` for
#: DETACH_MODE): "background" matches weave(background=True) and the Starlette adapter.
RENAMED_DETACH_MODES: Mapping[str, DetachMode] = {"thread": "background"}

#: Every key, its default, and what it means (docs/django.md has the same table).
DEFAULTS: Mapping[str, Any] = {
    "RECORD": True,  # record each request's weaves (the trace store, page and header)
    "SERVER_TIMING": None,  # send Server-Timing; None: only when DEBUG is on
    "SERVER_TIMING_ENTRIES": 20,  # the most entries in one header
    "TRACE_STORE_SIZE": 100,  # recent requests kept in memory, per process
    "KEEP_EMPTY_TRACES": False,  # also keep requests that ran no weave
    "TRACE_SAMPLE_RATE": 1.0,  # share of requests recorded in full (0.0 to 1.0)
    "TRACE_SLOW_MS": 500,  # a request this slow (ms) is kept even if not sampled; None: never
    "TRACE_UNSAMPLED_TIMINGS": True,  # unsampled requests collect their tasks' timings
    "TRACE_ACCESS": None,  # who sees the trace page: None (staff, or DEBUG), a callable or path
    "ATOMIC": "thread_sensitive",  # sync tasks inside transaction.atomic: the request's thread
    "CONNECTION_HYGIENE": True,  # close or return pool threads' connections after each task
    "ASYNC_TASK_THREADS": True,  # each async task's async ORM calls on a thread of its own
    "COUNT_QUERIES": True,  # count each task's SQL queries and their time in its trace
    "MAX_SQL_STATEMENTS": 50,  # statements kept per task attempt (the rest are counted)
    "MAX_THREADS": None,  # wove.configure(max_threads=...); None: leave Wove's default
    "DETACH_MODE": "background",  # detach()'s default mode: "background", "fork" or "tasks"
    "FORK_START_TIMEOUT": 5.0,  # seconds a forked child has to start; then killed. None: never
    "ENVIRONMENTS": {},  # remote environments by name: {"celery": {"APP": ..., ...}}
}

#: The keys of one remote environment in ENVIRONMENTS, and their defaults.
ENVIRONMENT_DEFAULTS: Mapping[str, Any] = {
    "ENGINE": "celery",  # the only engine so far
    "APP": None,  # the Celery app or its dotted path; None: Celery's current app
    "KEYS": None,  # signing secrets, first signs; None: SECRET_KEY and SECRET_KEY_FALLBACKS
    "MAX_AGE": 86400,  # seconds an envelope stays valid
    "MAX_PAYLOAD": 1_000_000,  # the most bytes a call's or result's payload may take
    "QUEUE": None,  # the Celery queue to send to; None: the app's routing
    "TERMINATE_ON_CANCEL": True,  # a cancelled task already running is stopped too
    "LEASE": 2.0,  # seconds a claimed call's lease lasts without a heartbeat
    "HEARTBEAT": 0.5,  # seconds between a worker's renewals of a running call's lease
}

#: What the signing keys derived from SECRET_KEY (and its fallbacks) are for: the
#: envelopes of remote environments, and nothing else.
ENVELOPE_PURPOSE: Final = "wove.contrib.celery.envelope"


class WoveSettingsError(WoveError, ImproperlyConfigured):
    """``settings.WOVE`` has an unknown key or a value of the wrong kind."""


@dataclass(frozen=True, slots=True)
class WoveSettings:
    record: bool
    server_timing: bool
    server_timing_entries: int
    trace_store_size: int
    keep_empty_traces: bool
    trace_sample_rate: float
    trace_slow_ms: float | None
    trace_unsampled_timings: bool
    trace_access: Callable[[HttpRequest], bool]
    atomic: AtomicPolicy
    connection_hygiene: bool
    async_task_threads: bool
    count_queries: bool
    max_sql_statements: int
    sql_params: bool  # DEBUG: the statements' parameters are kept too
    max_threads: int | None
    detach_mode: DetachMode
    fork_start_timeout: float | None
    environments: Mapping[str, RemoteEnv]


_loaded: WoveSettings | None = None
_generation = 0  # bumped by each reload: a load that started before one is not kept
_loaded_lock = threading.Lock()


def wove_settings() -> WoveSettings:
    """The settings now in force (loaded on first use; a bad value raises here)."""
    global _loaded
    loaded = _loaded
    if loaded is None:
        generation = _generation
        loaded = load(getattr(django_settings, "WOVE", {}), debug=bool(django_settings.DEBUG))
        with _loaded_lock:
            if generation == _generation:
                _loaded = loaded
    return loaded


def load(raw: object, *, debug: bool) -> WoveSettings:
    """Check ``raw`` (the ``WOVE`` dict) and fill in the defaults."""
    if not isinstance(raw, Mapping):
        raise WoveSettingsError(
            f"settings.WOVE must be a dict, got {type(raw).__name__}; for example "
            "WOVE = {'SERVER_TIMING': True}"
        )
    for key in raw:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), DEFAULTS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise WoveSettingsError(
                f"settings.WOVE has an unknown key {key!r}{hint} Known keys: " + ", ".join(DEFAULTS)
            )
    values = {**DEFAULTS, **raw}
    server_timing = values["SERVER_TIMING"]
    return WoveSettings(
        record=_flag(values, "RECORD"),
        server_timing=debug if server_timing is None else _flag(values, "SERVER_TIMING"),
        server_timing_entries=_count(values, "SERVER_TIMING_ENTRIES", least=1),
        trace_store_size=_count(values, "TRACE_STORE_SIZE", least=1),
        keep_empty_traces=_flag(values, "KEEP_EMPTY_TRACES"),
        trace_sample_rate=_rate(values, "TRACE_SAMPLE_RATE"),
        trace_slow_ms=_milliseconds(values, "TRACE_SLOW_MS"),
        trace_unsampled_timings=_flag(values, "TRACE_UNSAMPLED_TIMINGS"),
        trace_access=_access(values["TRACE_ACCESS"]),
        atomic=_choice(values, "ATOMIC", ATOMIC_CHOICES),
        connection_hygiene=_flag(values, "CONNECTION_HYGIENE"),
        async_task_threads=_flag(values, "ASYNC_TASK_THREADS"),
        count_queries=_flag(values, "COUNT_QUERIES"),
        max_sql_statements=_count(values, "MAX_SQL_STATEMENTS", least=0),
        sql_params=debug,
        max_threads=None if values["MAX_THREADS"] is None else _count(values, "MAX_THREADS", 1),
        detach_mode=_detach_mode(values),
        fork_start_timeout=_seconds_or_none(values, "FORK_START_TIMEOUT"),
        environments=_environments(values["ENVIRONMENTS"]),
    )


def staff_or_debug(request: HttpRequest) -> bool:
    """The default TRACE_ACCESS: active staff users, or anyone while DEBUG is on."""
    if django_settings.DEBUG:
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def _flag(values: Mapping[str, Any], key: str) -> bool:
    value = values[key]
    if not isinstance(value, bool):
        raise WoveSettingsError(f"settings.WOVE[{key!r}] must be True or False, got {value!r}")
    return value


def _count(values: Mapping[str, Any], key: str, least: int) -> int:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise WoveSettingsError(f"settings.WOVE[{key!r}] must be an int >= {least}, got {value!r}")
    return value


def _seconds_or_none(values: Mapping[str, Any], key: str) -> float | None:
    value = values[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise WoveSettingsError(
            f"settings.WOVE[{key!r}] must be a number of seconds > 0, or None for no "
            f"limit, got {value!r}"
        )
    return float(value)


def _rate(values: Mapping[str, Any], key: str) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise WoveSettingsError(
            f"settings.WOVE[{key!r}] must be a number from 0.0 (only failed and slow "
            f"requests) to 1.0 (every request), got {value!r}"
        )
    return float(value)


def _milliseconds(values: Mapping[str, Any], key: str) -> float | None:
    value = values[key]
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value < float("inf")
    ):
        raise WoveSettingsError(
            f"settings.WOVE[{key!r}] must be None (never) or milliseconds >= 0, got {value!r}"
        )
    return float(value)


def _choice(values: Mapping[str, Any], key: str, choices: tuple[Any, ...]) -> Any:
    value = values[key]
    if value not in choices:
        raise WoveSettingsError(
            f"settings.WOVE[{key!r}] must be one of {', '.join(map(repr, choices))}, got {value!r}"
        )
    return value


def _detach_mode(values: Mapping[str, Any]) -> DetachMode:
    """An old name stands for its new one (the system check wove.W003 reports it)."""
    value = values["DETACH_MODE"]
    if isinstance(value, str) and value in RENAMED_DETACH_MODES:
        return RENAMED_DETACH_MODES[value]
    mode: DetachMode = _choice(values, "DETACH_MODE", DETACH_MODES)
    return mode


def _access(value: object) -> Callable[[HttpRequest], bool]:
    if value is None:
        return staff_or_debug
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as exc:
            raise WoveSettingsError(
                f"settings.WOVE['TRACE_ACCESS'] = {value!r} cannot be imported ({exc}); give "
                "the dotted path of a function taking the request and returning a bool"
            ) from exc
    if not callable(value):
        raise WoveSettingsError(
            "settings.WOVE['TRACE_ACCESS'] must be None, a function taking the request and "
            f"returning a bool, or its dotted path; got {value!r}"
        )
    access: Callable[[HttpRequest], bool] = value
    return access


def _environments(value: object) -> Mapping[str, RemoteEnv]:
    if not isinstance(value, Mapping):
        raise WoveSettingsError(
            "settings.WOVE['ENVIRONMENTS'] must be a dict of remote environments by name, "
            f"e.g. {{'celery': {{'APP': 'proj.celery.app'}}}}; got {value!r}"
        )
    return {name: _environment(name, options) for name, options in value.items()}


def _environment(name: object, options: object) -> RemoteEnv:
    where = f"settings.WOVE['ENVIRONMENTS'][{name!r}]"
    if not isinstance(name, str) or not name:
        raise WoveSettingsError(f"{where}: an environment's name must be a non-empty string")
    if not isinstance(options, Mapping):
        raise WoveSettingsError(f"{where} must be a dict of its settings, got {options!r}")
    for key in options:
        if key not in ENVIRONMENT_DEFAULTS:
            close = difflib.get_close_matches(str(key), ENVIRONMENT_DEFAULTS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise WoveSettingsError(
                f"{where} has an unknown key {key!r}{hint} Known keys: "
                + ", ".join(ENVIRONMENT_DEFAULTS)
            )
    values = {**ENVIRONMENT_DEFAULTS, **options}
    if values["ENGINE"] != "celery":
        raise WoveSettingsError(f"{where}['ENGINE'] must be 'celery', got {values['ENGINE']!r}")
    try:
        from wove.contrib.celery import CeleryEnv
        from wove.contrib.celery.envelope import purpose_key
    except ImportError as exc:
        raise WoveSettingsError(
            f'{where} needs Celery: pip install "wove[celery]" ({exc})'
        ) from exc
    try:
        keys = values["KEYS"]
        if keys is None:
            # Never the raw SECRET_KEY as an HMAC key: a key of its own for this purpose.
            secrets = [
                django_settings.SECRET_KEY,
                *getattr(django_settings, "SECRET_KEY_FALLBACKS", ()),
            ]
            keys = [
                purpose_key(
                    secret,
                    ENVELOPE_PURPOSE,
                    "SECRET_KEY" if index == 0 else f"SECRET_KEY_FALLBACKS[{index - 1}]",
                )
                for index, secret in enumerate(secrets)
            ]
        return CeleryEnv(
            values["APP"],
            keys=keys,
            max_age=values["MAX_AGE"],
            max_payload=values["MAX_PAYLOAD"],
            queue=values["QUEUE"],
            terminate_on_cancel=values["TERMINATE_ON_CANCEL"],
            lease=values["LEASE"],
            heartbeat=values["HEARTBEAT"],
        )
    except WoveError as exc:
        default = " (KEYS defaults to SECRET_KEY)" if values["KEYS"] is None else ""
        raise WoveSettingsError(f"{where}{default}: {exc}") from exc


def _reload(*, setting: str, **_: object) -> None:
    global _loaded, _generation
    # The environments' default keys are SECRET_KEY and its fallbacks.
    if setting in ("WOVE", "DEBUG", "SECRET_KEY", "SECRET_KEY_FALLBACKS"):
        with _loaded_lock:
            _generation += 1
            _loaded = None
        for listener in _listeners:
            listener()


_listeners: list[Callable[[], None]] = []


def on_reload(listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever WOVE or DEBUG changes (``override_settings`` in tests)."""
    _listeners.append(listener)


setting_changed.connect(_reload)
