"""Payload bytes for Celery: the shared :mod:`wove.contrib.remote.capture`, under the
name this package has always had."""

from wove.contrib.remote.capture import (
    MAX_PARTS_SHOWN,
    PayloadError,
    PayloadTooLarge,
    dumps,
    format_size,
    function_parts,
    loads,
)

__all__ = [
    "MAX_PARTS_SHOWN",
    "PayloadError",
    "PayloadTooLarge",
    "dumps",
    "format_size",
    "function_parts",
    "loads",
]
