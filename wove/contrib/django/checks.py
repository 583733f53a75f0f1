"""System checks: a bad ``WOVE`` setting or a missing middleware is reported at startup."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from wove import WoveError

from . import conf

MIDDLEWARE_PATH = "wove.contrib.django.middleware.WoveMiddleware"


@register()
def check_wove_settings(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> Sequence[CheckMessage]:
    try:
        options = conf.wove_settings()
    except conf.WoveSettingsError as exc:
        return [Error(str(exc), hint="See docs/django.md for every key.", id="wove.E001")]
    errors: list[CheckMessage] = []
    for name, env in options.environments.items():
        try:
            getattr(env, "app", None)  # a Celery app given by its dotted path is imported
        except WoveError as exc:
            errors.append(
                Error(
                    f"settings.WOVE['ENVIRONMENTS'][{name!r}]['APP']: {exc}",
                    hint="See docs/celery.md.",
                    id="wove.E001",
                )
            )
    return errors


@register()
def check_renamed_settings(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> Sequence[CheckMessage]:
    """An old name in WOVE still works (conf maps it); say which name replaced it."""
    raw = getattr(settings, "WOVE", None)
    mode = raw.get("DETACH_MODE") if isinstance(raw, Mapping) else None
    if not isinstance(mode, str) or mode not in conf.RENAMED_DETACH_MODES:
        return []
    new = conf.RENAMED_DETACH_MODES[mode]
    return [
        Warning(
            f"settings.WOVE['DETACH_MODE'] = {mode!r} is deprecated: the mode is now "
            f"named {new!r}, as in weave(background=True).",
            hint=f"Set WOVE['DETACH_MODE'] = {new!r}.",
            id="wove.W003",
        )
    ]


@register()
def check_middleware(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> Sequence[CheckMessage]:
    if MIDDLEWARE_PATH in getattr(settings, "MIDDLEWARE", ()):
        return []
    return [
        Warning(
            "Wove's middleware is not in MIDDLEWARE, so requests are not traced and "
            "wove.contrib.django.detach() cannot run work after the response.",
            hint=f"Add {MIDDLEWARE_PATH!r} near the top of MIDDLEWARE (below "
            "django-debug-toolbar's middleware, if you use it), so it also sees weaves "
            "run by the middleware below it.",
            id="wove.W001",
        )
    ]
