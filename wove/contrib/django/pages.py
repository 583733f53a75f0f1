"""The trace pages' HTML, from the templates under ``templates/wove/``.

The project's template engines are asked first, so a ``wove/trace_list.html`` of the
project's (a directory in ``TEMPLATES["DIRS"]``, or an app listed before
``wove.contrib.django`` with ``APP_DIRS``) replaces Wove's. A project with no
``TEMPLATES`` setting, or none that finds Wove's app templates, gets Wove's own templates
rendered by an engine of Wove's: the pages work without any template setting.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from django.http import HttpRequest
from django.template import Context, Engine, TemplateDoesNotExist, loader

TEMPLATES = Path(__file__).resolve().parent / "templates"


def render_page(request: HttpRequest, name: str, context: dict[str, Any]) -> str:
    """``name`` (``"wove/trace_list.html"``) rendered with ``context``."""
    try:
        template = loader.get_template(name)
    except TemplateDoesNotExist:
        return _own_engine().get_template(name).render(Context(context))
    return template.render(context, request)


@functools.cache
def _own_engine() -> Engine:
    return Engine(dirs=[str(TEMPLATES)], autoescape=True)
