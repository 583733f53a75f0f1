"""The trace page: recent requests, then each request's weaves drawn on a time axis.

Two forms of the same drawing: :func:`waterfall_html`, a whole page, and
:func:`waterfall_fragment`, a ``<div class="wove-waterfall">`` carrying its own styles,
every rule scoped under that class, to embed in another tool's page (a debug toolbar
panel, an admin view). No JavaScript and no external assets, so it works offline. No
``style`` attribute either: each bar's place is a class (``wl-1250`` is ``left: 12.5%``)
whose rule is in the drawing's one ``<style>`` element, so under a Content-Security-Policy
that forbids inline styles the page works by giving that element the request's nonce
(``nonce=``). Bars are placed with percentages of the request's duration, so the browser
does all the layout. Every string that comes from a request or a task goes through
``html.escape``.

Layout: one row per task of each weave run, grouped under a row for the weave run. A
mapped task keeps its one row, with one thin line per item, so a fan-out reads as a
block rather than pushing everything else off screen. Retries share their item's line.
A task that never started (its weave failed first) is a zero-length "cancelled" record:
a marker where the run ended. Under each request: its failed and cancelled attempts,
then the SQL statements each task ran (when an integration annotated them, see
:mod:`.statements`), as ``<details>`` that need no script.
"""

from __future__ import annotations

import functools
import math
import os
import re
import time
from collections.abc import Iterable
from html import escape

from wove import TraceRecord

from .request import DETACHED, RequestTrace
from .statements import SQL, SQL_OMITTED, omitted, statements
from .text import safe_text

_STATUSES = ("ok", "error", "timeout", "cancelled")

#: The class of the fragment's outer ``<div>``; every style rule is scoped under it.
SCOPE_CLASS = "wove-waterfall"


def waterfall_html(
    traces: Iterable[RequestTrace],
    *,
    title: str = "Wove traces",
    base_url: str = "",
    back_link: bool = False,
    nonce: str | None = None,
) -> str:
    """The page for ``traces`` (in the order given; a store's ``recent()`` is newest first).

    ``base_url`` is where the adapter serves the list of requests; when given, each
    request also links to its own page at ``{base_url}{id}/`` and its JSON at
    ``{base_url}{id}.json``, so adapters serve those routes too. ``back_link``: the page
    of one request, which then starts with a link back to the list at ``base_url``.
    ``nonce``: the request's Content-Security-Policy nonce, put on the ``<style>``
    elements (see :func:`waterfall_fragment`).
    """
    fragment = waterfall_fragment(
        traces, base_url=base_url, title=title, back_link=back_link, nonce=nonce
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style{_nonce_attribute(nonce)}>{PAGE_CSS}</style>"
        f"</head>\n<body>\n{fragment}\n</body></html>\n"
    )


def _nonce_attribute(nonce: str | None) -> str:
    """`` nonce="..."`` for an element's start tag, or "" when there is no nonce."""
    return "" if not nonce else f' nonce="{escape(str(nonce))}"'


def waterfall_fragment(
    traces: Iterable[RequestTrace],
    *,
    base_url: str = "",
    title: str | None = None,
    within: str = "",
    back_link: bool = False,
    nonce: str | None = None,
) -> str:
    """The same drawing as :func:`waterfall_html`, as one ``<div class="wove-waterfall">``
    with its ``<style>`` inside: no ``<html>``, ``<head>`` or ``<body>``.

    ``title``: an ``<h1>`` above the legend. ``within``: a CSS selector of an element the
    fragment is placed in (``"#djDebug"``), put in front of every rule so that they also
    win over a host page's reset rules of higher specificity (a reset like
    ``#djDebug div {height: auto}`` would otherwise flatten the bars). ``back_link``: see
    :func:`waterfall_html`. The SQL statements of each task are listed open when there is
    one request, folded when there are several. ``nonce``: the request's
    Content-Security-Policy nonce, given to the one ``<style>`` element, which holds
    every rule the drawing needs (the bars' places included), so a policy without
    ``'unsafe-inline'`` for styles lets it draw.
    """
    traces = list(traces)
    places = _Places()
    parts = [""]  # the <style>, once the places used are known
    if back_link and base_url:
        parts.append(f'<p class="nav"><a href="{escape(base_url)}">← All recent requests</a></p>')
    if title is not None:
        parts.append(f"<h1>{escape(title)}</h1>")
    parts.append(_legend())
    if traces:
        unfold = len(traces) == 1
        parts.append(_request_table(traces))
        parts += [_section(trace, base_url, unfold, places) for trace in traces]
    else:
        parts.append('<p class="empty">No request has run a weave yet.</p>')
    css = _scoped_css(within) + places.css(within)
    parts[0] = f"<style{_nonce_attribute(nonce)}>{css}</style>"
    return f'<div class="{SCOPE_CLASS}">\n' + "\n".join(parts) + "\n</div>"


def _legend() -> str:
    keys = [
        ("lane-thread status-ok", "sync task (thread)"),
        ("lane-caller status-ok", "sync task (caller's thread)"),
        ("lane-loop status-ok", "async task"),
        ("lane-remote status-ok", "remote task (worker)"),
    ]
    keys += [(f"lane-thread status-{s}", s) for s in _STATUSES[1:]]
    keys.append(("lane-thread status-cancelled marker", "cancelled: never started, or at once"))
    items = "".join(
        f'<span class="key"><span class="bar {cls}"></span>{text}</span>' for cls, text in keys
    )
    mapped = '<span class="key">thin lines: the items of a mapped task</span>'
    return f'<div class="legend">{items}{mapped}</div>'


def _request_table(traces: list[RequestTrace]) -> str:
    head = (
        "<tr><th>When</th><th>Method</th><th>Path</th><th>Status</th>"
        '<th class="num">Duration</th><th class="num">In weaves</th>'
        '<th class="num">Tasks</th>'
        '<th class="num" title="attempts that failed or timed out, retried ones included">'
        "Failed</th>"
        '<th class="num" title="tasks stopped, or never started, because their weave failed">'
        "Cancelled</th></tr>"
    )
    rows = [
        f'<tr class="{"failed" if _went_wrong(t) else "ok"}">'
        f"<td>{_when(t)}</td><td>{escape(t.method)}</td>"
        f'<td class="path"><a href="#req-{escape(t.id)}">{escape(t.path)}</a></td>'
        f"<td>{_status(t)}</td>"
        f'<td class="num">{_ms(t.duration)}</td><td class="num">{_ms(t.weave_time)}</td>'
        f'<td class="num">{t.task_count}</td><td class="num">{_count(t, failed=True)}</td>'
        f'<td class="num">{_count(t, failed=False)}</td></tr>'
        for t in traces
    ]
    return f'<table class="requests"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _count(trace: RequestTrace, *, failed: bool) -> str:
    """Failed (error, timeout) or cancelled attempts; blank for none."""
    number = sum((r.status == "cancelled") != failed for r in trace.failed)
    return str(number) if number else ""


class _Places:
    """The places (left, width, tick step) a drawing's bars use, as classes: each a
    percentage in hundredths (``wl-1250``: ``left: 12.5%``), with its rule made once."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def left(self, percent: float) -> str:
        return self._use("wl", percent)

    def width(self, percent: float) -> str:
        return self._use("ww", percent)

    def tick(self, percent: float) -> str:
        return self._use("wt", percent)

    def _use(self, kind: str, percent: float) -> str:
        name = f"{kind}-{round(percent * 100)}"
        self._used.add(name)
        return name

    def css(self, within: str) -> str:
        scope = f"{within} .{SCOPE_CLASS}" if within.strip() else f".{SCOPE_CLASS}"
        rules = []
        for name in sorted(self._used):
            kind, _, hundredths = name.partition("-")
            value = f"{int(hundredths) / 100:g}%"
            rules.append(f"{scope} .{name}{{{_PLACE_PROPERTY[kind]}:{value}}}")
        return "\n" + "\n".join(rules) if rules else ""


_PLACE_PROPERTY = {"wl": "left", "ww": "width", "wt": "--tick"}


def _section(trace: RequestTrace, base_url: str, unfold: bool, places: _Places) -> str:
    span = max(trace.span, 1e-9)
    step = _nice_step(span)
    links = ""
    if base_url:
        page = escape(f"{base_url}{trace.id}/")
        links = (
            f' · <a href="{page}">this request\'s page</a>'
            f' · <a href="{escape(base_url + trace.id)}.json">JSON</a>'
        )
    head = (
        f'<h2><span class="method">{escape(trace.method)}</span>{escape(trace.path)} '
        f'{_status(trace)} <span class="dur">{_ms(trace.duration)}</span></h2>'
        f'<p class="meta">{_when(trace)} · id {escape(trace.id)} · '
        f"{_ms(trace.weave_time)} in weaves · {plural(trace.task_count, 'task')}{links}</p>"
    )
    if trace.error:
        head += f'<p class="request-error">{escape(trace.error)}</p>'
    whole = _line(_span_bar(0.0, trace.duration, span, places))
    rows = [_axis(span, step, places), _row("request", "whole request", "", whole)]
    for runs in _by_weave(trace.task_runs()):
        rows.append(_weave_row(trace, runs, span, places))
        rows += [_task_row(trace, run, span, places) for run in runs]
    tick = places.tick(step / span * 100)
    return (
        f'<section class="request" id="req-{escape(trace.id)}">{head}'
        f'<div class="waterfall {tick}">{"".join(rows)}</div>'
        f"{_errors(trace)}{_sql(trace, unfold)}</section>"
    )


def _axis(span: float, step: float, places: _Places) -> str:
    count = int(span / step + 1e-9)
    ticks = "".join(
        f'<span class="tick {places.left(k * step / span * 100)}">'
        f"{round(k * step * 1000, 9):g} ms</span>"
        for k in range(count + 1)
    )
    return f'<div class="row axis"><div class="label"></div><div class="track">{ticks}</div></div>'


def _weave_row(
    trace: RequestTrace, runs: list[tuple[TraceRecord, ...]], span: float, places: _Places
) -> str:
    records = [r for run in runs for r in run]
    first = min(r.start for r in records) - trace.start
    last = max(r.end for r in records) - trace.start
    where = records[0].weave
    name = f"{os.path.basename(where)} ({plural(len(runs), 'task')})"
    return _row("weave", name, where, _line(_span_bar(first, last - first, span, places)))


def _task_row(
    trace: RequestTrace, run: tuple[TraceRecord, ...], span: float, places: _Places
) -> str:
    lines: dict[int | None, list[str]] = {}
    for record in sorted(run, key=lambda r: (r.index or 0, r.attempt)):
        lines.setdefault(record.index, []).append(_bar(trace, record, span, places))
    mapped = run[0].index is not None
    label = f"{run[0].task} ({plural(len(lines), 'item')})" if mapped else run[0].task
    track = "".join(_line("".join(bars)) for bars in lines.values())
    return _row("task mapped" if mapped else "task", label, run[0].task, track)


def _line(bars: str) -> str:
    return f'<div class="line">{bars}</div>'


def _row(kind: str, label: str, tooltip: str, track: str) -> str:
    return (
        f'<div class="row {kind}"><div class="label" title="{escape(tooltip)}">{escape(label)}'
        f'</div><div class="track">{track}</div></div>'
    )


def _bar(trace: RequestTrace, record: TraceRecord, span: float, places: _Places) -> str:
    left, width = _geometry(trace.offset(record), record.duration, span)
    classes = f"bar lane-{record.lane} status-{record.status}"
    if record.status == "cancelled" and width < _MARKER_BELOW:
        # Too short to see (or no length at all: a task that never started): a marker
        # at the moment it was cancelled.
        left = _geometry(trace.end_offset(record), 0.0, span)[0]
        classes += f" marker {places.left(left)}"
    else:
        classes += f" {places.left(left)} {places.width(width)}"
    return f'<span class="{escape(classes)}" title="{escape(_tooltip(trace, record))}"></span>'


_MARKER_BELOW = 0.5  # percent of the time axis


def _never_started(record: TraceRecord) -> bool:
    """A record the engine makes for a task its failed weave never started: cancelled,
    zero length, on no thread."""
    return record.status == "cancelled" and record.end <= record.start and not record.thread


def _span_bar(offset: float, duration: float, span: float, places: _Places) -> str:
    left, width = _geometry(offset, duration, span)
    return f'<span class="bar span {places.left(left)} {places.width(width)}"></span>'


def _geometry(offset: float, duration: float, span: float) -> tuple[float, float]:
    """Left and width in percent, clamped so a bar never leaves its track."""
    left = min(max(offset / span * 100, 0.0), 100.0)
    return left, min(max(duration / span * 100, 0.0), 100.0 - left)


def _name(record: TraceRecord) -> str:
    return record.task if record.index is None else f"{record.task}[{record.index}]"


def _tooltip(trace: RequestTrace, record: TraceRecord) -> str:
    if _never_started(record):
        lines = [
            f"{_name(record)} · cancelled: never started",
            f"{record.lane} lane",
            f"at {_ms(trace.offset(record))}, when its weave ended",
        ]
    else:
        lines = [
            f"{_name(record)} · attempt {record.attempt + 1} · {record.status}",
            f"{record.lane} lane · {record.thread}",
            f"{_ms(trace.offset(record))} → {_ms(trace.end_offset(record))} "
            f"({_ms(record.duration)})",
        ]
    if record.error:
        lines.append(record.error)
    extra = getattr(record, "extra", {})  # TraceRecord gained `extra` late
    listed = statements(extra)
    for key, value in extra.items():
        if key == SQL and listed:  # listed under the waterfall
            lines.append(f"SQL: {plural(len(listed), 'statement')} listed below the waterfall")
        elif key != SQL_OMITTED or not isinstance(value, int):
            lines.append(f"{safe_text(key)} = {safe_text(value)}")
    return "\n".join(lines)


def _errors(trace: RequestTrace) -> str:
    items = "".join(
        f'<li><span class="tag status-{escape(r.status)}">{escape(r.status)}</span>'
        f"<code>{escape(_name(r))}</code> {escape(_what_happened(r))}</li>"
        for r in trace.failed
    )
    return f'<ul class="errors">{items}</ul>' if items else ""


def _what_happened(record: TraceRecord) -> str:
    error = (record.error or "").removesuffix(": ")
    if record.status == "cancelled":
        reason = error.removeprefix("CancelledError").removeprefix(": ")
        if _never_started(record):
            return reason or "not started: its weave failed"
        return f"attempt {record.attempt + 1}: cancelled" + (f" ({reason})" if reason else "")
    return f"attempt {record.attempt + 1}: {error or record.status}"


def _sql(trace: RequestTrace, unfold: bool) -> str:
    """Each task attempt's SQL statements, in the order they ran, under its name."""
    blocks = []
    for record in trace.records:
        extra = getattr(record, "extra", {})
        kept, more = statements(extra), omitted(extra)
        if not kept and not more:
            continue
        total = len(kept) + more
        queries = extra.get("queries")
        if isinstance(queries, int) and not isinstance(queries, bool) and queries > total:
            total = queries
        query_ms = extra.get("query_ms")
        if isinstance(query_ms, int | float) and not isinstance(query_ms, bool):
            seconds = query_ms / 1000
        else:
            seconds = sum(s.ms for s in kept) / 1000
        name = _name(record)
        if record.attempt:
            name += f" (attempt {record.attempt + 1})"
        items = "".join(
            f'<li><span class="sql-ms">{_ms(s.ms / 1000)}</span>'
            f'<code class="sql-text">{escape(s.sql)}</code>'
            + ("" if s.params is None else f'<code class="sql-params">{escape(s.params)}</code>')
            + "</li>"
            for s in kept
        )
        note = ""
        if more:
            counted = f"and {plural(more, 'more statement')}" if kept else plural(more, "statement")
            note = (
                f'<p class="sql-more">{counted}, counted but not listed (over the limit per '
                "task attempt)</p>"
            )
        listing = f'<ol class="sql-list">{items}</ol>' if items else ""
        blocks.append(
            f'<details class="sql-task"{" open" if unfold else ""}><summary><code>'
            f"{escape(name)}</code> · {plural(total, 'statement')} · {_ms(seconds)}</summary>"
            f"{listing}{note}</details>"
        )
    if not blocks:
        return ""
    return f'<div class="sql"><h3>SQL by task</h3>{"".join(blocks)}</div>'


def _by_weave(runs: list[tuple[TraceRecord, ...]]) -> list[list[tuple[TraceRecord, ...]]]:
    groups: dict[int, list[tuple[TraceRecord, ...]]] = {}
    for run in runs:
        groups.setdefault(run[0].weave_id, []).append(run)
    return list(groups.values())


def _went_wrong(trace: RequestTrace) -> bool:
    """Worth a red row: no response or a server error; a retry that recovered is not.
    Detached work has no response by nature: only its error counts."""
    if trace.error is not None:
        return True
    if trace.status is None:
        return trace.method != DETACHED
    return trace.status >= 500


def plural(number: int, one: str, many: str | None = None) -> str:
    return f"{number} {one if number == 1 else many or one + 's'}"


def _nice_step(span: float) -> float:
    """A 1, 2 or 5 x 10^n step giving four to ten ticks across ``span`` seconds."""
    raw = span / 6
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * 0.999)


def _status(trace: RequestTrace) -> str:
    if trace.status is None and trace.method == DETACHED:
        label = "failed" if trace.error is not None else "after the response"
        return f'<span class="status-code s-detached">{label}</span>'
    if trace.status is None:
        return '<span class="status-code s-none">no response</span>'
    return f'<span class="status-code s-{trace.status // 100}xx">{trace.status}</span>'


def _when(trace: RequestTrace) -> str:
    return time.strftime("%H:%M:%S", time.localtime(trace.started_at))


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 1000 else f"{ms:,.0f} ms"


#: The bars' colours: by lane for a task that succeeded, by status for one that did not
#: (with its lane as a stripe along the bottom).
COLOURS = {
    "thread": "#2563eb",
    "loop": "#0d9488",
    "caller": "#7c3aed",
    "remote": "#db2777",
    "error": "#dc2626",
    "timeout": "#d97706",
    "cancelled": "#9ca3af",
}

# Written relative to the fragment's <div>: "&" is the <div> itself, every other selector
# is put under it by _scoped_css. The "& *" rule makes the text inside follow the <div>
# rather than a host page's rules for bare elements.
_CSS = (
    "&{"
    + "".join(f"--{name}:{colour};" for name, colour in COLOURS.items())
    + """--grid:#e5e7eb;--muted:#6b7280;--ink:#111827;
font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--ink);background:#fff;
text-align:left}
&,& *{box-sizing:border-box}
& *{font-family:inherit;font-size:inherit;line-height:inherit;color:inherit}
h1{font-size:1.4rem;margin:0 0 .75rem;font-weight:700}
h2{font-size:1.1rem;margin:0;word-break:break-all;font-weight:700}
code,.label{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
code{display:inline}
a{color:#1d4ed8}
.meta{color:var(--muted);margin:.2rem 0 0}
.empty{color:var(--muted);margin:1rem 0}
.legend{display:flex;flex-wrap:wrap;gap:.4rem 1.25rem;margin:0 0 1.25rem;padding:.5rem .75rem;
background:#f9fafb;border:1px solid var(--grid);border-radius:6px;color:#374151}
.legend .key{display:inline-flex;align-items:center;gap:.4rem}
.legend .bar{position:static;display:inline-block;width:1.8rem;height:12px}
table.requests{border-collapse:collapse;width:100%;margin:0 0 1rem;border:0}
.requests th,.requests td{text-align:left;padding:.3rem .6rem;border:0;
border-bottom:1px solid var(--grid);white-space:nowrap;vertical-align:middle}
.requests th{font-weight:600;color:#374151;background:#f9fafb}
.requests .path{white-space:normal;word-break:break-all;width:100%}
.requests .num{text-align:right;font-variant-numeric:tabular-nums}
.requests tr.failed td{background:#fef2f2}
.status-code{font-weight:600;font-size:.95em}
.s-2xx{color:#15803d}.s-3xx{color:#1d4ed8}.s-4xx{color:#b45309}
.s-5xx,.s-none,.request-error{color:var(--error)}
.s-detached{color:#6b21a8}
.request-error{margin:.2rem 0 0}
section.request{border-top:2px solid var(--grid);padding-top:1rem;margin-top:1.75rem}
.request h2 .method{color:var(--muted);margin-right:.5rem}
.request h2 .dur{color:var(--muted);font-weight:400;margin-left:.4rem}
.waterfall{margin-top:.75rem;padding-right:2.5rem}
.row{display:flex;align-items:stretch}
.row+.row{border-top:1px solid #f3f4f6}
.label{flex:0 0 16rem;padding:2px .75rem 2px 0;overflow:hidden;text-overflow:ellipsis;
white-space:nowrap}
.track{flex:1 1 auto;position:relative;padding:3px 0;
background-image:linear-gradient(to right,var(--grid) 1px,transparent 1px);
background-size:var(--tick) 100%}
.line{position:relative;height:14px}
.mapped .line{height:5px}
.mapped .line+.line{margin-top:1px}
.bar{position:absolute;top:0;bottom:0;min-width:2px;border-radius:2px;background:var(--lane,#6b7280)}
.bar.lane-thread{--lane:var(--thread)}
.bar.lane-loop{--lane:var(--loop)}
.bar.lane-caller{--lane:var(--caller)}
.bar.lane-remote{--lane:var(--remote)}
.bar.status-error{background:var(--error);box-shadow:inset 0 -3px var(--lane)}
.bar.status-timeout{background:var(--timeout);box-shadow:inset 0 -3px var(--lane)}
.bar.status-cancelled{background:repeating-linear-gradient(135deg,var(--cancelled) 0 3px,
#e5e7eb 3px 6px);box-shadow:inset 0 -3px var(--lane)}
.bar.span{background:#e5e7eb;border:1px solid #d1d5db}
.row.weave .label{color:var(--muted);font-weight:600}
.row.weave .bar.span{background:#e0e7ff;border-color:#a5b4fc}
.row.request .label{color:var(--muted)}
.row.axis .track{background-image:none;height:1.5rem;border-bottom:1px solid #d1d5db}
.tick{position:absolute;bottom:2px;transform:translateX(-50%);font-size:11px;color:var(--muted);
white-space:nowrap}
.tick:first-child{transform:none}
.errors{list-style:none;margin:.75rem 0 0;padding:0}
.errors li{padding:.25rem 0;border-bottom:1px solid #fee2e2;word-break:break-word}
.errors code{margin:0 .4rem}
.tag{display:inline-block;padding:0 .4rem;border-radius:3px;font-size:11px;font-weight:600;
color:#fff;background:var(--error)}
.tag.status-timeout{background:var(--timeout)}
.tag.status-cancelled{background:#6b7280}
.bar.marker{width:10px;min-width:0;margin-left:-5px;border-radius:2px;
background:var(--cancelled);border:2px solid #4b5563;box-shadow:none}
.legend .bar.marker{width:10px;margin-left:0}
.nav{margin:0 0 .5rem}
h3{font-size:1rem;margin:.9rem 0 .3rem;font-weight:600}
.sql-task{margin:.2rem 0;border:1px solid var(--grid);border-radius:4px;padding:.2rem .5rem}
.sql-task summary{cursor:pointer;color:#374151;display:list-item}
.sql-list{margin:.3rem 0 .2rem;padding-left:2rem}
.sql-list li{padding:.15rem 0;border-top:1px solid #f3f4f6}
.sql-ms{display:inline-block;min-width:5.5rem;color:var(--muted);font-variant-numeric:tabular-nums}
.sql-text{white-space:pre-wrap;word-break:break-word}
.sql-params{display:block;margin-left:5.5rem;color:var(--muted);white-space:pre-wrap;
word-break:break-word}
.sql-more{margin:.2rem 0;color:var(--muted)}
"""
)

#: The page around the fragment: only the margins and width of the document.
PAGE_CSS = "body{margin:0 auto;padding:1.5rem 2rem 4rem;max-width:1400px;background:#fff}"

_RULE = re.compile(r"\s*([^{}]+?)\s*\{([^{}]*)\}")


@functools.cache
def _scoped_css(within: str) -> str:
    """_CSS with every selector under the fragment's class (and ``within``, if given)."""
    if any(c in within for c in "<>{}"):
        raise ValueError(f"within must be a CSS selector, got {within!r}")
    scope = f"{within} .{SCOPE_CLASS}" if within.strip() else f".{SCOPE_CLASS}"
    rules = []
    for selectors, body in _RULE.findall(_CSS):
        scoped = ",".join(
            s.replace("&", scope) if s.startswith("&") else f"{scope} {s}"
            for s in (part.strip() for part in selectors.split(","))
        )
        rules.append(f"{scoped}{{{body.strip()}}}")
    return "\n".join(rules)
