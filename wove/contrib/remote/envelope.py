"""Signed envelopes: :func:`seal` produces one, :func:`open_envelope` checks one and
returns its body.

An envelope is a JSON-serialisable ``dict`` that carries an opaque ``bytes`` body (for
the Celery integration, a cloudpickle payload) together with what the receiver needs to
decide whether to trust it before unpickling anything::

    {"wove": 1, "kind": "call", "kid": "3f9a0c1d2e4b", "iat": 1718000000.123456,
     "mid": "<message id>", "body": "<base64>", "mac": "<hex HMAC-SHA256>"}

and, optionally, ``"trace": {"traceparent": "00-...", ...}``: a small mapping of strings
(the sender's trace context, as OpenTelemetry propagates it), signed with the rest.

The MAC is HMAC-SHA256, keyed by the secret whose id is ``kid``, over the version, kind,
key id, issue time, message id and the SHA-256 of the body, one per line, and, when the
envelope has a ``trace``, one more line: ``trace `` and the mapping as canonical JSON
(sorted keys, no spaces, ASCII). An envelope without one is signed as before. A
:class:`Keyring` holds the shared secrets: the first one signs, all of them verify, so a
key is rotated by putting the new secret first and keeping the old one after it until
every message signed with it has drained.

Shared by the environments whose messages cross a broker (Celery, RQ). This module is
pure (no engine import): it only needs the standard library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, cast

from wove import InvalidOptionError, WoveError

#: The envelope format this module writes and the only one it reads.
VERSION: Final = 1

#: How far in the future (seconds) an issue time may be before the envelope is refused:
#: the allowance for clocks of producer and worker that disagree a little.
MAX_CLOCK_SKEW: Final = 60.0

#: The shortest secret accepted, in bytes (after UTF-8 encoding of a ``str``).
MIN_SECRET_BYTES: Final = 32

_MAKE_SECRET: Final = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'
_KEY_ID_MESSAGE: Final = b"wove key id"
_FIELDS: Final = frozenset({"wove", "kind", "kid", "iat", "mid", "body", "mac"})
#: The optional field: the sender's trace context.
TRACE: Final = "trace"
_TRACED_FIELDS: Final = _FIELDS | {TRACE}
_FIELD_LIST: Final = ", ".join(sorted(_FIELDS)) + f" (and optionally {TRACE})"
#: The most entries, and the most characters of its canonical JSON, a trace context may
#: have (W3C: a ``traceparent`` is 55 characters, a ``tracestate`` at most 512, a
#: ``baggage`` at most 8192 bytes).
MAX_TRACE_ENTRIES: Final = 16
MAX_TRACE_CHARS: Final = 10_000
#: Beyond this an issue time is nonsense (year ~33658); also keeps ``float()`` of a
#: huge JSON integer from overflowing.
_MAX_TIME: Final = 1e12

Reason = Literal[
    "malformed",
    "version",
    "kind",
    "unknown-key",
    "signature",
    "expired",
    "future",
    "message-id",
    "unknown-env",
    "replay",
]


class EnvelopeError(WoveError, ValueError):
    """An envelope was refused; ``reason`` says which check failed (one of
    ``"malformed"``, ``"version"``, ``"kind"``, ``"unknown-key"``, ``"signature"``,
    ``"expired"``, ``"future"``, ``"message-id"``; on a worker also ``"unknown-env"``
    and ``"replay"``). The body was not returned."""

    def __init__(self, reason: Reason, message: str) -> None:
        # Both in args: Celery rebuilds a stored failure as ``cls(*args)``.
        super().__init__(reason, message)
        self.reason: Reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[EnvelopeError], tuple[Reason, str]]:
        return (type(self), (self.reason, self.message))


def purpose_key(secret: str | bytes, purpose: str, what: str = "the secret") -> bytes:
    """A signing key for ``purpose`` made from a general-purpose secret (Django's
    ``SECRET_KEY``): SHA-256 of ``b"wove.purpose:" + purpose + b"\\n" + secret``, as
    Django's ``salted_hmac`` derives its keys, so the raw secret is never an HMAC key and
    a MAC made here is worthless to anything else keyed by the same secret (and the
    reverse). ``secret`` must be at least :data:`MIN_SECRET_BYTES` long (checked before
    deriving: the derived key is always 32 bytes); ``what`` names it in that error."""
    raw = _secret_bytes(secret, what)
    salt = f"wove.purpose:{purpose}\n".encode()
    return hashlib.sha256(salt + raw).digest()


def derive_key_id(secret: bytes) -> str:
    """The id of a secret given without one: the first 12 hex digits of
    HMAC-SHA256(secret, ``b"wove key id"``). It reveals nothing usable about the
    secret and is the same in every process that has the same secret."""
    return hmac.digest(secret, _KEY_ID_MESSAGE, "sha256").hex()[:12]


@dataclass(frozen=True, slots=True, repr=False)
class Keyring:
    """The shared secrets, as ``(key id, secret)`` pairs: the first signs, all verify.

    Build one with :meth:`from_config`. The ``repr`` shows the key ids, never a secret.
    """

    keys: tuple[tuple[str, bytes], ...]
    _by_id: dict[str, bytes] = field(init=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise InvalidOptionError(
                f"a wove keyring needs at least one secret, got none; make one with "
                f"{_MAKE_SECRET} and give the same value to every producer and worker"
            )
        by_id: dict[str, bytes] = {}
        for entry in self.keys:
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise InvalidOptionError(
                    f"each keyring entry must be a (key id, secret) pair, got "
                    f"{type(entry).__name__}; build the keyring with Keyring.from_config()"
                )
            key_id, secret = entry
            _check_key_id(key_id)
            if not isinstance(secret, bytes):
                raise InvalidOptionError(
                    f"the secret of key id {key_id!r} must be bytes, got "
                    f"{type(secret).__name__}; build the keyring with Keyring.from_config(), "
                    f"which also accepts str secrets"
                )
            _check_secret_length(secret, f"the secret of key id {key_id!r}")
            if key_id in by_id:
                raise InvalidOptionError(
                    f"key id {key_id!r} appears twice in the keyring; every secret must "
                    f"have its own id (a secret listed twice gives the same derived id, "
                    f"so list each secret once)"
                )
            by_id[key_id] = secret
        object.__setattr__(self, "_by_id", by_id)

    @classmethod
    def from_config(cls, keys: Sequence[str | bytes] | Mapping[str, str | bytes]) -> Keyring:
        """A keyring from a setting: either a non-empty sequence of secrets (ids are
        derived with :func:`derive_key_id`) or a non-empty mapping ``{key_id: secret}``.
        In both, the first secret signs and every secret verifies. ``str`` secrets are
        UTF-8 encoded; each must be at least 32 bytes.

        Raises :class:`~wove.errors.InvalidOptionError` for an empty config, a bare
        ``str``/``bytes`` instead of a sequence, a secret that is not ``str``/``bytes``,
        a duplicate id, or a secret that is too short.
        """
        if isinstance(keys, str | bytes | bytearray | memoryview):
            raise InvalidOptionError(
                f"the wove keys setting must be a list of secrets or a mapping "
                f"{{key_id: secret}}, got a bare {type(keys).__name__}; wrap it in a list: "
                f"keys=[secret] (put a new secret first and keep old ones after it to "
                f"rotate)"
            )
        pairs: list[tuple[str, bytes]] = []
        if isinstance(keys, Mapping):
            for key_id, secret in keys.items():
                _check_key_id(key_id)
                pairs.append((key_id, _secret_bytes(secret, f"the secret of key id {key_id!r}")))
        elif isinstance(keys, Sequence):
            for index, secret in enumerate(keys):
                raw = _secret_bytes(secret, f"secret number {index} of the keys setting")
                pairs.append((derive_key_id(raw), raw))
        else:
            raise InvalidOptionError(
                f"the wove keys setting must be a list of secrets or a mapping "
                f"{{key_id: secret}}, got {type(keys).__name__}; use a list or tuple (the "
                f"order matters: the first secret signs)"
            )
        return cls(tuple(pairs))

    @property
    def signing_id(self) -> str:
        """The id of the key that signs: the first one."""
        return self.keys[0][0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, signing key first."""
        return tuple(self._by_id)

    def secret(self, key_id: str) -> bytes | None:
        """The secret of ``key_id``, or ``None`` if this keyring does not know it."""
        return self._by_id.get(key_id)

    def __repr__(self) -> str:
        return f"Keyring(key_ids={self.key_ids!r}, signing_id={self.signing_id!r})"


def _check_key_id(key_id: object) -> None:
    if not isinstance(key_id, str) or not key_id or "\n" in key_id:
        raise InvalidOptionError(
            f"a key id must be a non-empty str without line breaks, got {key_id!r}; use "
            f"short names such as {{'2024-06': secret}}, or give a list of secrets to "
            f"have ids derived"
        )


def _secret_bytes(secret: object, what: str) -> bytes:
    if isinstance(secret, str):
        raw = secret.encode("utf-8")
    elif isinstance(secret, bytes):
        raw = secret
    else:
        raise InvalidOptionError(
            f"{what} must be a str or bytes, got {type(secret).__name__}; make one with "
            f"{_MAKE_SECRET}"
        )
    _check_secret_length(raw, what)
    return raw


def _check_secret_length(secret: bytes, what: str) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise InvalidOptionError(
            f"{what} is {len(secret)} bytes, shorter than the minimum of "
            f"{MIN_SECRET_BYTES}; make a strong one with {_MAKE_SECRET} and give the "
            f"same value to every producer and worker"
        )


def trace_json(trace: Mapping[str, str]) -> str:
    """The canonical JSON of a trace context, as the MAC covers it."""
    return json.dumps(dict(trace), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def trace_problem(trace: object) -> str | None:
    """What is wrong with ``trace`` as an envelope's trace context, or None: it must be a
    dict of at most :data:`MAX_TRACE_ENTRIES` ``str`` -> ``str`` entries whose canonical
    JSON is at most :data:`MAX_TRACE_CHARS` characters."""
    if type(trace) is not dict:
        return f"field 'trace' must be an object, got {type(trace).__name__}"
    if len(trace) > MAX_TRACE_ENTRIES:
        return f"field 'trace' has {len(trace)} entries, more than {MAX_TRACE_ENTRIES}"
    for key, value in trace.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            return f"field 'trace' must map strings to strings, got {_show(key)}: {_show(value)}"
    size = len(trace_json(trace))
    if size > MAX_TRACE_CHARS:
        return f"field 'trace' is {size} characters of JSON, more than {MAX_TRACE_CHARS}"
    return None


def _mac(
    secret: bytes,
    kind: str,
    kid: str,
    iat: float,
    mid: str,
    body: bytes,
    trace: Mapping[str, str] | None = None,
) -> str:
    signed = f"{VERSION}\n{kind}\n{kid}\n{iat:.6f}\n{mid}\n{hashlib.sha256(body).hexdigest()}"
    if trace is not None:  # ASCII JSON has no line break: this line is always the last
        signed += f"\ntrace {trace_json(trace)}"
    # surrogatepass: a message id with a lone surrogate survives JSON and must not crash.
    return hmac.digest(secret, signed.encode("utf-8", "surrogatepass"), "sha256").hex()


def seal(
    keyring: Keyring,
    kind: str,
    message_id: str,
    body: bytes,
    *,
    now: float | None = None,
    trace: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """Wrap ``body`` in an envelope signed with the keyring's first key.

    ``kind`` says what the body is for (the Celery integration uses ``"call"``,
    ``"reply"`` and ``"weave"``); :func:`open_envelope` refuses an envelope of another
    kind than it expects. ``message_id`` binds the envelope to one message. ``now``
    overrides the issue time (``time.time()``). ``trace``: the sender's trace context
    (see :func:`trace_problem` for its limits; ``ValueError`` beyond them), carried in
    the envelope and signed with it; None or empty: no ``trace`` field. The result
    survives a JSON round trip.
    """
    kid, secret = keyring.keys[0]
    iat = time.time() if now is None else float(now)
    envelope: dict[str, object] = {
        "wove": VERSION,
        "kind": kind,
        "kid": kid,
        "iat": iat,
        "mid": message_id,
        "body": base64.b64encode(body).decode("ascii"),
    }
    if trace:
        trace = dict(trace)
        problem = trace_problem(trace)
        if problem is not None:
            raise ValueError(f"cannot seal this trace context: {problem}")
        envelope[TRACE] = trace
        envelope["mac"] = _mac(secret, kind, kid, iat, message_id, body, trace)
    else:
        envelope["mac"] = _mac(secret, kind, kid, iat, message_id, body)
    return envelope


def envelope_trace(envelope: Mapping[str, object]) -> dict[str, str] | None:
    """The trace context of an envelope :func:`open_envelope` accepted, or None."""
    trace = envelope.get(TRACE)
    return trace if type(trace) is dict else None


def open_envelope(
    keyring: Keyring,
    envelope: object,
    *,
    kind: str,
    max_age: float,
    message_id: str | None = None,
    now: float | None = None,
) -> bytes:
    """Verify ``envelope`` and return its body; raise :class:`EnvelopeError` otherwise.

    The checks run in this order, and the body is returned only if all pass: the shape
    (a dict with exactly the seven fields, or those and ``trace``, each of its type and
    within its limits: ``"malformed"``), the
    version (``"version"``), the kind equals ``kind`` (``"kind"``), the key id is in the
    keyring (``"unknown-key"``), the body is valid base64 (``"malformed"``), the MAC
    (``"signature"``, compared in constant time), the issue time is not more than
    :data:`MAX_CLOCK_SKEW` seconds ahead (``"future"``) nor more than ``max_age``
    seconds old (``"expired"``), and, if ``message_id`` is given, the envelope was
    issued for that message (``"message-id"``). Time is checked only after the MAC, so
    a forged envelope is always reported as ``"signature"``.
    """
    if type(envelope) is not dict:
        raise _malformed(kind, f"got {type(envelope).__name__} instead of a JSON object")
    keys = envelope.keys()
    if keys != _FIELDS and keys != _TRACED_FIELDS:
        missing = ", ".join(sorted(name for name in _FIELDS if name not in envelope)) or "none"
        unexpected = ", ".join(sorted(_show(key) for key in envelope if key not in _TRACED_FIELDS))
        unexpected = unexpected or "none"
        raise _malformed(kind, f"missing fields: {missing}; unexpected fields: {unexpected}")
    version = envelope["wove"]
    if type(version) is not int:
        raise _malformed(kind, f"field 'wove' must be an integer, got {type(version).__name__}")
    got_kind = _text(envelope, "kind", kind)
    kid = _text(envelope, "kid", kind)
    mid = _text(envelope, "mid", kind)
    body_text = _text(envelope, "body", kind)
    mac = _text(envelope, "mac", kind)
    iat = envelope["iat"]
    if type(iat) is float:
        if not math.isfinite(iat) or abs(iat) > _MAX_TIME:
            raise _malformed(kind, f"field 'iat' must be a finite time, got {iat!r}")
    elif type(iat) is int:
        if abs(iat) > _MAX_TIME:
            raise _malformed(kind, f"field 'iat' must be a plausible time, got {iat!r}")
        iat = float(iat)
    else:
        raise _malformed(kind, f"field 'iat' must be a number, got {type(iat).__name__}")
    if not mac.isascii():
        raise _malformed(kind, "field 'mac' must be a hexadecimal string")
    trace: dict[str, str] | None = None
    if TRACE in envelope:
        problem = trace_problem(envelope[TRACE])
        if problem is not None:
            raise _malformed(kind, problem)
        trace = cast(dict[str, str], envelope[TRACE])

    if version != VERSION:
        raise EnvelopeError(
            "version",
            f"expected a wove envelope of version {VERSION}, got version {version}; the "
            f"sender runs a different wove release: upgrade producers and workers to the "
            f"same version",
        )
    if got_kind != kind:
        raise EnvelopeError(
            "kind",
            f"expected a {kind!r} envelope, got a {_show(got_kind)} envelope; the message was "
            f"routed to the wrong handler or copied from another channel, and was refused",
        )
    secret = keyring.secret(kid)
    if secret is None:
        known = ", ".join(map(repr, keyring.key_ids))
        raise EnvelopeError(
            "unknown-key",
            f"the envelope is signed with key id {_show(kid)}, but this process knows only key "
            f"ids {known}; give every producer and worker the same keys, and when rotating "
            f"keep the old secret in keys (after the new one) until every message signed "
            f"with it has been processed",
        )
    try:
        body = base64.b64decode(body_text, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(kind, "field 'body' is not valid base64") from None
    if not hmac.compare_digest(_mac(secret, got_kind, kid, iat, mid, body, trace), mac):
        raise EnvelopeError(
            "signature",
            f"expected a valid signature by key id {kid!r}, but the signature does not "
            f"match: the envelope was altered in transit, or signed with a different "
            f"secret under the same id; check that every producer and worker has the same "
            f"secret for key id {kid!r}",
        )
    if now is None:
        now = time.time()
    if iat > now + MAX_CLOCK_SKEW:
        raise EnvelopeError(
            "future",
            f"expected an issue time at most {MAX_CLOCK_SKEW:g} s ahead of this clock, got "
            f"one {iat - now:.1f} s in the future; synchronise the clocks of producers and "
            f"workers (NTP)",
        )
    if now - iat > max_age:
        raise EnvelopeError(
            "expired",
            f"expected an envelope at most {max_age:g} s old, got one issued "
            f"{now - iat:.1f} s ago; the message waited too long in the queue or was "
            f"replayed; raise max_age if queues are legitimately that slow",
        )
    if message_id is not None and mid != message_id:
        raise EnvelopeError(
            "message-id",
            f"expected an envelope for message {message_id!r}, got one issued for message "
            f"{_show(mid)}; a valid envelope was moved to another message (a replay) and was "
            f"refused",
        )
    return body


def _text(envelope: dict[str, object], name: str, kind: str) -> str:
    value = envelope[name]
    if not isinstance(value, str):
        raise _malformed(kind, f"field {name!r} must be a string, got {type(value).__name__}")
    return value


def _show(value: object) -> str:
    """``repr`` of a value from the wire, shortened: it may be anything a sender chose."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _malformed(kind: str, detail: str) -> EnvelopeError:
    return EnvelopeError(
        "malformed",
        f"expected a wove {kind!r} envelope: a JSON object with exactly the fields "
        f"{_FIELD_LIST}; {detail}. It was not made by wove's seal() or was rewritten in "
        f"transit: check that producers and workers run the same wove version and that "
        f"nothing else publishes to this queue",
    )
