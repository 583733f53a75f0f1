"""The SQL statements of a task attempt, as integrations annotate them and pages show them.

An integration that sees a task's queries (the Django adapter does) annotates its trace
record with :data:`SQL`, a list of ``(sql, ms, params)`` in the order they ran (``params``
a short text, or None when parameters are not shown), at most some number of them, and
with :data:`SQL_OMITTED`, how many more ran beyond that. The waterfall lists them under
each request. Framework-neutral: another database integration can annotate the same keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple

#: Annotation key: the statements kept, ``[(sql, ms, params_or_None), ...]`` in order.
SQL: Final = "sql"
#: Annotation key: how many statements ran beyond those kept (absent when none).
SQL_OMITTED: Final = "sql_omitted"

#: The longest SQL text kept per statement, and the longest parameters text.
SQL_TEXT_LIMIT: Final = 4000
PARAMS_TEXT_LIMIT: Final = 500


class Statement(NamedTuple):
    sql: str
    ms: float
    params: str | None


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def statements(extra: Mapping[str, object]) -> list[Statement]:
    """The statements annotated on a record; tuples or, after a JSON round trip (a forked
    child's report), lists. Anything else under the key is not ours: ignored."""
    kept = extra.get(SQL)
    if not isinstance(kept, list | tuple):
        return []
    found = []
    for entry in kept:
        if not isinstance(entry, list | tuple) or len(entry) != 3:
            continue
        sql, ms, params = entry
        if (
            isinstance(sql, str)
            and isinstance(ms, int | float)
            and not isinstance(ms, bool)
            and (params is None or isinstance(params, str))
        ):
            found.append(Statement(sql, float(ms), params))
    return found


def omitted(extra: Mapping[str, object]) -> int:
    """How many statements of the attempt were counted but not kept."""
    more = extra.get(SQL_OMITTED)
    return more if isinstance(more, int) and not isinstance(more, bool) and more > 0 else 0
