"""MkDocs hooks of the documentation site (mkdocs.yml).

- The markers of tests/test_doc_examples.py (``<!-- not-run: why -->`` and
  ``<!-- setup: what -->`` on the line before a code block) are removed from the pages:
  they are for the test, and inside content tabs they would wrap the block in a ``<p>``.
- The docstrings are plain text with reST-style roles (:class:`TraceStore`), which
  mkdocstrings renders as Markdown: ":class:" followed by the code. Each role becomes
  its code alone, linked to the object's entry in the API reference when there is one
  (an optional cross-reference, resolved by mkdocs-autorefs: a target that is not
  documented stays plain code, without a warning).
"""

from __future__ import annotations

import re
from typing import Any

MARKER = re.compile(r"^[ \t]*<!--\s*(?:not-run|setup):.*?-->[ \t]*\n", re.MULTILINE)
ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|exc|obj):<code>(~?)([\w.]+)</code>")

# A short target (no dot) is looked up in the module the reference page documents.
PAGE_MODULES = {
    "reference/wove.md": "wove",
    "reference/lowlevel.md": "wove.lowlevel",
    "reference/contrib-django.md": "wove.contrib.django",
    "reference/contrib-starlette.md": "wove.contrib.starlette",
    "reference/contrib-celery.md": "wove.contrib.celery",
    "reference/contrib-opentelemetry.md": "wove.contrib.opentelemetry",
    "reference/contrib-traces.md": "wove.contrib.traces",
}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return MARKER.sub("", markdown)


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    module = PAGE_MODULES.get(page.file.src_uri)
    if module is None:
        return html

    def link(match: re.Match[str]) -> str:
        short, target = match[1], match[2]
        identifier = target if "." in target else f"{module}.{target}"
        title = target.rpartition(".")[2] if short else target
        return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'

    # A reST literal block's "::" becomes ":" (Markdown shows the block as code anyway).
    return ROLE.sub(link, html).replace("::</p>", ":</p>")
