"""A :class:`RequestTrace` as a ``Server-Timing`` header value, as JSON data, or as a page.

Framework-neutral: these return strings and plain data; the adapters decide when a
header is sent and who may see the page.
"""

from __future__ import annotations

import functools
import operator
import string
from collections.abc import Mapping
from typing import Any

from wove import TraceRecord
from wove.lowlevel import RawRecord

from .request import RequestTrace, deferred
from .text import safe_text
from .waterfall import plural, waterfall_html

__all__ = ["server_timing", "trace_json", "waterfall_html"]

# RFC 9110 tchar: what a metric name may contain.
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
_DESC_LIMIT = 80
_raw_start = operator.itemgetter(6)  # RawRecord's start, the order of trace.records


def server_timing(trace: RequestTrace, max_entries: int = 20) -> str:
    """``wove;dur=..`` for the time spent in weaves, then ``wove.<task>;dur=..`` per task run.

    Task entries carry the ``wove.`` prefix so they cannot clash with the app's own metrics.
    A mapped task is one entry (its items' span) with the item count in ``desc``. Past
    ``max_entries`` (the total included) the longest task runs are kept, in start order,
    since a header that grows with the work becomes a liability. An empty string means
    the request ran no weave: send no header.
    """
    if max_entries < 1:
        raise ValueError(f"max_entries must be at least 1, got {max_entries}")
    pending = deferred(trace)
    if pending is not None and not pending.records and len(pending.raw) < max_entries:
        fast = _plain_single_weave_raw(pending.raw)  # the records need not be made
        if fast:
            return fast
    records = trace.records
    if not records:
        return ""
    if len(records) < max_entries:
        fast = _plain_single_weave(records)
        if fast:
            return fast
    runs = trace.task_runs()
    spans = [(_span(run), position, run) for position, run in enumerate(runs)]
    if len(spans) >= max_entries:  # keep the longest, shown in start order
        spans = sorted(spans, key=lambda entry: entry[0], reverse=True)[: max_entries - 1]
        spans.sort(key=lambda entry: entry[1])
    weaves = len({r.weave_id for r in trace.records})
    summary = f"{plural(len(runs), 'task')}, {plural(weaves, 'weave')}"
    if len(spans) < len(runs):
        summary += f", {len(spans)} shown"
    entries = [_entry("wove", trace.weave_time, summary)]
    for span, _, run in spans:
        first = run[0]
        if len(run) == 1 and first.index is None and first.status == "ok":
            name = first.task  # the common case, inline: one plain successful attempt
            if name.isascii() and name.isidentifier() and len(name) <= _DESC_LIMIT:
                entries.append(f'wove.{name};dur={span * 1000:.1f};desc="{name}"')
                continue
        entries.append(_entry(f"wove.{_token(first.task)}", span, _describe(run)))
    return ", ".join(entries)


def _plain_single_weave(records: tuple[TraceRecord, ...]) -> str:
    """The header of the common request, or "" if it is not that: one weave run whose
    tasks each ran once and succeeded, under names that need no escaping (the general
    path's result, without grouping the records into task runs first)."""
    first = records[0]
    weave_id, low, high = first.weave_id, first.start, first.end
    names: set[str] = set()
    entries = [""]
    for record in records:
        name, start, end = record.task, record.start, record.end
        if (
            record.weave_id != weave_id
            or record.index is not None
            or record.status != "ok"
            or name in names
            or not (name.isascii() and name.isidentifier() and len(name) <= _DESC_LIMIT)
        ):
            return ""
        names.add(name)
        low = min(low, start)
        high = max(high, end)
        entries.append(f'wove.{name};dur={(end - start) * 1000:.1f};desc="{name}"')
    entries[0] = _entry("wove", high - low, f"{plural(len(names), 'task')}, 1 weave")
    return ", ".join(entries)


def _plain_single_weave_raw(raw: tuple[RawRecord, ...]) -> str:
    """:func:`_plain_single_weave` read from the raw tuples (see ``RawRecord``)."""
    if not raw:
        return ""
    first = raw[0]
    weave_id, low, high = first[1], first[6], first[7]
    names: set[str] = set()
    entries = [""]
    for _, run_id, name, index, _, _, start, end, _, error, _, _ in sorted(raw, key=_raw_start):
        if run_id != weave_id or index is not None or error is not None or name in names:
            return ""
        around = _plain_entry(name)
        if around is None:
            return ""
        names.add(name)
        if start < low:
            low = start
        if end > high:
            high = end
        entries.append(f"{around[0]}{(end - start) * 1000:.1f}{around[1]}")
    entries[0] = _entry("wove", high - low, f"{plural(len(names), 'task')}, 1 weave")
    return ", ".join(entries)


@functools.lru_cache(maxsize=4096)
def _plain_entry(name: str) -> tuple[str, str] | None:
    """What goes before and after the duration in the entry of a task named ``name``,
    if the name needs no escaping (else None): made once per task name."""
    if name.isascii() and name.isidentifier() and len(name) <= _DESC_LIMIT:
        return f"wove.{name};dur=", f';desc="{name}"'
    return None


def trace_json(trace: RequestTrace) -> dict[str, Any]:
    """The trace as JSON-ready data; times in milliseconds from the start of the request."""
    return {
        "id": trace.id,
        "method": trace.method,
        "path": trace.path,
        "status": trace.status,
        "started_at": trace.started_at,
        "duration_ms": _ms(trace.duration),
        "weave_ms": _ms(trace.weave_time),
        "error": trace.error,
        "records": [_record_json(trace, record) for record in trace.records],
    }


def _record_json(trace: RequestTrace, record: TraceRecord) -> dict[str, Any]:
    return {
        "weave": record.weave,
        "weave_id": record.weave_id,
        "task": record.task,
        "index": record.index,
        "lane": record.lane,
        "thread": record.thread,
        "offset_ms": _ms(trace.offset(record)),
        "duration_ms": _ms(record.duration),
        "attempt": record.attempt,
        "status": record.status,
        "error": record.error,
        # getattr: TraceRecord gained `extra` late; keep reading older records.
        "extra": _jsonable(getattr(record, "extra", {})),
    }


def _jsonable(value: object, depth: int = 0) -> Any:
    """Annotations are arbitrary objects; the JSON view must never fail on one (a cycle,
    a deep structure, or an object whose ``str`` raises included)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if depth >= _MAX_DEPTH:
        return safe_text(value)
    if isinstance(value, Mapping):
        return {safe_text(key): _jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(item, depth + 1) for item in value]
    return safe_text(value)


_MAX_DEPTH = 8


def _entry(name: str, seconds: float, desc: str) -> str:
    return f'{name};dur={seconds * 1000:.1f};desc="{_quoted(desc)}"'


def _span(run: tuple[TraceRecord, ...]) -> float:
    if len(run) == 1:
        return run[0].end - run[0].start
    return max(r.end for r in run) - min(r.start for r in run)


def _describe(run: tuple[TraceRecord, ...]) -> str:
    """The task's own name (the metric name had to be sanitized) and what the dur hides."""
    if len(run) == 1 and run[0].index is None:  # the common case: one plain attempt
        return run[0].task if run[0].status == "ok" else f"{run[0].task} ({run[0].status})"
    finals: dict[int | None, TraceRecord] = {}
    for record in run:  # a retried item counts by its last attempt: it may have recovered
        if record.index not in finals or record.attempt > finals[record.index].attempt:
            finals[record.index] = record
    notes = []
    if run[0].index is not None:
        notes.append(plural(len(finals), "item"))
    if len(run) > len(finals):
        notes.append(plural(len(run) - len(finals), "retry", "retries"))
    notes += sorted({r.status for r in finals.values() if r.status != "ok"})
    return f"{run[0].task} ({', '.join(notes)})" if notes else run[0].task


def _token(name: str) -> str:
    if name.isascii() and name.isidentifier():  # letters, digits and "_": all tchars
        return name
    return "".join(c if c in _TOKEN_CHARS else "_" for c in name) or "task"


def _quoted(text: str) -> str:
    """Content of a quoted-string: printable ASCII only (header values must survive
    latin-1 encoding in every server), with backslash and quote escaped."""
    text = text[:_DESC_LIMIT]
    if not (text.isascii() and text.isprintable()):
        text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
