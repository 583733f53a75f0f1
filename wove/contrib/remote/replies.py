"""A remote call's outcome -> the reply body the worker sends back, and back again.

Shared by every remote environment that runs calls by value: the worker builds the body
(:func:`ok_body`, :func:`error_body`), the caller turns it into the value or the
function's own exception (:func:`outcome`).

A reply body is a pickled tuple: ``("ok", value, info)``, ``("error", exception, type
name, message, traceback, info)``, where ``exception`` is the pickled exception, or None
when it cannot travel (the type name, message and traceback always do), or ``("lost",
type name, message, info)``: the function ran, but its reply could not be stored (the
error that prevented it; :func:`lost_body`). ``info`` says where and how long it ran:
``{"worker": hostname, "seconds": duration}``.
An environment whose replies cross a broker seals the body in a signed envelope.
"""

from __future__ import annotations

import linecache
import traceback
from typing import Any

from wove import RemoteResultLost, RemoteTaskError

from . import capture
from .capture import PayloadError, PayloadTooLarge


def ok_body(task: str, value: Any, info: dict[str, Any], limit: int | None) -> bytes:
    """The reply for a value; a result too large (or unpicklable) becomes that error."""
    try:
        return capture.dumps(
            ("ok", value, info),
            limit=limit,
            what=f"the result of task {task!r}",
            parts=lambda: [("the result", value)],
        )
    except (PayloadTooLarge, PayloadError) as error:
        return error_body(error, info, limit)


def error_body(
    error: BaseException, info: dict[str, Any], limit: int | None, source: str | None = None
) -> bytes:
    """The reply for an exception raised by the task on the worker. ``source``: the file
    the weave is in, where the functions that travelled by value were defined."""
    text = _traceback_text(error, source)
    pickled: bytes | None
    try:
        pickled = capture.dumps(error, limit=limit, what="the exception", parts=list)
        capture.loads(pickled)  # an exception that cannot be rebuilt travels as text
    except Exception:
        pickled = None
    message = str(error)
    if limit is not None and len(message) + len(text) > limit:
        message, text = message[: limit // 4], text[-(limit // 4) :]
    body = ("error", pickled, _type_name(error), message, text, info)
    return capture.dumps(body, limit=None, what="the reply", parts=list)


def lost_body(error: BaseException, info: dict[str, Any]) -> bytes:
    """The reply recorded when the reply of a function that ran could not be stored."""
    body = ("lost", _type_name(error), str(error)[:1000], info)
    return capture.dumps(body, limit=None, what="the reply", parts=list)


def _traceback_text(error: BaseException, source: str | None) -> str:
    """The formatted traceback; frames of functions that travelled by value (cloudpickle
    names their file ``<dynamic-code>``) point at ``source`` and show its lines, as the
    worker runs the same code."""
    summary = traceback.TracebackException.from_exception(error)
    if source:
        seen: set[int] = set()
        stack: list[traceback.TracebackException | None] = [summary]
        while stack:
            current = stack.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            current.stack = traceback.StackSummary.from_list(
                [_located(frame, source) for frame in current.stack]
            )
            stack += [current.__cause__, current.__context__]
    return "".join(summary.format())


def _located(frame: traceback.FrameSummary, source: str) -> traceback.FrameSummary:
    if frame.filename != "<dynamic-code>" or frame.lineno is None:
        return frame
    line = linecache.getline(source, frame.lineno).strip()
    return traceback.FrameSummary(source, frame.lineno, frame.name, line=line or None)


def _type_name(error: BaseException) -> str:
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def outcome(task: str, where: str, body: bytes) -> tuple[Any, dict[str, Any]]:
    """The value of a verified reply body, with its info; or raise the remote exception
    (its own type when it can be rebuilt, else :class:`wove.RemoteTaskError`), the
    worker's traceback attached as a note naming ``where`` it ran (``"Celery task
    <id>"``)."""
    reply = capture.loads(body)
    if not isinstance(reply, tuple) or not reply or reply[0] not in ("ok", "error", "lost"):
        raise RemoteTaskError(task, "ValueError", f"unreadable reply {reply!r:.200}", None)
    if reply[0] == "ok":
        _, value, info = reply
        return value, info
    if reply[0] == "lost":
        _, type_name, message, info = reply
        worker = info.get("worker") or "a worker"
        raise RemoteResultLost(
            task,
            "ResultLost",
            f"the function ran on {worker} ({where}) and finished, but its reply could "
            f"not be stored ({type_name}: {message}), so its result or error is lost; it "
            f"is not resent (retries=) unless the task is idempotent=True",
            None,
        )
    _, pickled, type_name, message, text, info = reply
    error: BaseException | None = None
    if pickled is not None:
        try:
            loaded = capture.loads(pickled)
        except Exception:
            loaded = None
        if isinstance(loaded, BaseException):
            error = loaded
    if error is None:
        error = RemoteTaskError(task, type_name, message, text)
    worker = info.get("worker") or "a worker"
    error.add_note(f"wove: remote traceback ({where} on {worker}):\n{text}")
    raise error
