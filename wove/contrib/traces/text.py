"""Text that cannot fail: annotations are arbitrary objects, shown in pages and JSON."""

from __future__ import annotations


def safe_text(value: object, limit: int = 200) -> str:
    """``str(value)``, or a plain description when that fails; at most ``limit`` long."""
    try:
        text = str(value)
    except Exception:
        text = object.__repr__(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
