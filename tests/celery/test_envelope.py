"""Signed envelopes: what seal() writes, and every way open_envelope() refuses one."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import pickle
import time
import timeit
from typing import Any

import pytest

from wove.contrib.celery.envelope import (
    MAX_CLOCK_SKEW,
    VERSION,
    EnvelopeError,
    Keyring,
    derive_key_id,
    open_envelope,
    seal,
)
from wove.errors import InvalidOptionError, WoveError

OLD = "old-secret-" + "o" * 40
NEW = "new-secret-" + "n" * 40
OTHER = "other-secret-" + "x" * 40
NOW = 1_718_000_000.25
BODY = b"\x80\x05payload \x00\xff with every byte " + bytes(range(256))


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.from_config([NEW])


def sealed(keyring: Keyring, **overrides: Any) -> dict[str, Any]:
    envelope = seal(keyring, "call", "msg-1", BODY, now=NOW)
    envelope.update(overrides)
    return envelope


def refusal(keyring: Keyring, envelope: object, **options: Any) -> EnvelopeError:
    options = {"kind": "call", "max_age": 300.0, "now": NOW, **options}
    with pytest.raises(EnvelopeError) as caught:
        open_envelope(keyring, envelope, **options)
    return caught.value


def resign(keyring: Keyring, envelope: dict[str, Any]) -> dict[str, Any]:
    """Recompute the MAC of an edited envelope as a holder of the secret would."""
    secret = keyring.secret(envelope["kid"])
    assert secret is not None
    body = base64.b64decode(envelope["body"])
    signed = "\n".join(
        [
            str(envelope["wove"]),
            envelope["kind"],
            envelope["kid"],
            f"{envelope['iat']:.6f}",
            envelope["mid"],
            hashlib.sha256(body).hexdigest(),
        ]
    )
    mac = hmac.new(secret, signed.encode(), hashlib.sha256).hexdigest()
    return {**envelope, "mac": mac}


# -- what seal writes ---------------------------------------------------------------------


def test_seal_writes_the_documented_fields(keyring: Keyring) -> None:
    envelope = seal(keyring, "call", "msg-1", BODY, now=NOW)
    assert envelope == {
        "wove": 1,
        "kind": "call",
        "kid": keyring.signing_id,
        "iat": NOW,
        "mid": "msg-1",
        "body": base64.b64encode(BODY).decode("ascii"),
        "mac": envelope["mac"],
    }
    assert VERSION == 1
    assert MAX_CLOCK_SKEW == 60.0
    assert isinstance(envelope["mac"], str)
    assert len(envelope["mac"]) == 64
    int(envelope["mac"], 16)


def test_the_mac_is_hmac_sha256_over_the_documented_lines(keyring: Keyring) -> None:
    envelope = seal(keyring, "reply", "msg-9", BODY, now=NOW)
    lines = f"1\nreply\n{keyring.signing_id}\n{NOW:.6f}\nmsg-9\n{hashlib.sha256(BODY).hexdigest()}"
    expected = hmac.new(NEW.encode(), lines.encode(), hashlib.sha256).hexdigest()
    assert envelope["mac"] == expected


def test_seal_uses_the_clock_when_now_is_not_given(keyring: Keyring) -> None:
    before = time.time()
    envelope = seal(keyring, "call", "m", b"x")
    after = time.time()
    assert isinstance(envelope["iat"], float)
    assert before <= envelope["iat"] <= after
    assert open_envelope(keyring, envelope, kind="call", max_age=5.0) == b"x"


def test_seal_stores_an_integer_now_as_a_float(keyring: Keyring) -> None:
    envelope = seal(keyring, "call", "m", b"x", now=1_700_000_000)
    assert type(envelope["iat"]) is float


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"x", BODY, bytes(200), b"\n" * 3])
def test_round_trip(keyring: Keyring, body: bytes) -> None:
    envelope = seal(keyring, "call", "msg-1", body, now=NOW)
    assert open_envelope(keyring, envelope, kind="call", max_age=1.0, now=NOW) == body


@pytest.mark.parametrize("kind", ["call", "reply", "weave"])
def test_round_trip_through_json(keyring: Keyring, kind: str) -> None:
    envelope = seal(keyring, kind, "msg-1", BODY, now=NOW + 0.123456789)
    wire = json.loads(json.dumps(envelope))
    opened = open_envelope(
        keyring, wire, kind=kind, max_age=10.0, message_id="msg-1", now=NOW + 1.0
    )
    assert opened == BODY


def test_round_trip_of_an_odd_message_id_through_json(keyring: Keyring) -> None:
    mid = "täsk\n\udc80 ☃ " + "é" * 50
    envelope = seal(keyring, "call", mid, BODY, now=NOW)
    wire = json.loads(json.dumps(envelope))
    assert open_envelope(keyring, wire, kind="call", max_age=1.0, message_id=mid, now=NOW) == BODY


def test_an_integer_issue_time_from_another_encoder_is_accepted(keyring: Keyring) -> None:
    envelope = seal(keyring, "call", "m", BODY, now=1_700_000_000)
    envelope["iat"] = 1_700_000_000  # e.g. an encoder that writes 1700000000.0 as an int
    assert open_envelope(keyring, envelope, kind="call", max_age=5.0, now=1_700_000_001) == BODY


def test_message_id_is_only_checked_when_given(keyring: Keyring) -> None:
    envelope = sealed(keyring)
    assert open_envelope(keyring, envelope, kind="call", max_age=1.0, now=NOW) == BODY
    opened = open_envelope(keyring, envelope, kind="call", max_age=1.0, message_id="msg-1", now=NOW)
    assert opened == BODY


# -- tampering ------------------------------------------------------------------------------


def test_a_tampered_body_is_refused(keyring: Keyring) -> None:
    other = base64.b64encode(BODY[:-1] + b"!").decode("ascii")
    error = refusal(keyring, sealed(keyring, body=other))
    assert error.reason == "signature"
    assert keyring.signing_id in str(error)
    assert "altered" in str(error)


def test_a_truncated_body_is_refused(keyring: Keyring) -> None:
    envelope = sealed(keyring)
    envelope["body"] = base64.b64encode(BODY[:10]).decode("ascii")
    assert refusal(keyring, envelope).reason == "signature"


def test_a_tampered_kind_is_refused() -> None:
    keyring = Keyring.from_config([NEW])
    envelope = sealed(keyring, kind="reply")  # a call envelope relabelled as a reply
    assert refusal(keyring, envelope, kind="reply").reason == "signature"


def test_a_tampered_key_id_is_refused() -> None:
    keyring = Keyring.from_config([NEW, OLD])
    envelope = sealed(keyring, kid=keyring.key_ids[1])
    assert refusal(keyring, envelope).reason == "signature"


@pytest.mark.parametrize("shift", [1.0, -1.0, 0.001, -250.0])
def test_a_tampered_issue_time_is_refused(keyring: Keyring, shift: float) -> None:
    envelope = sealed(keyring, iat=NOW + shift)
    assert refusal(keyring, envelope).reason == "signature"


def test_a_tampered_message_id_is_refused(keyring: Keyring) -> None:
    envelope = sealed(keyring, mid="msg-2")
    assert refusal(keyring, envelope).reason == "signature"
    assert refusal(keyring, envelope, message_id="msg-2").reason == "signature"


@pytest.mark.parametrize(
    "mac",
    ["0" * 64, "f" * 64, "", "abc", "0" * 128],
)
def test_a_replaced_mac_is_refused(keyring: Keyring, mac: str) -> None:
    assert refusal(keyring, sealed(keyring, mac=mac)).reason == "signature"


def test_a_mac_with_one_flipped_digit_is_refused(keyring: Keyring) -> None:
    envelope = sealed(keyring)
    mac = envelope["mac"]
    for position in (0, 31, 63):
        flipped = "1" if mac[position] != "1" else "2"
        bad = {**envelope, "mac": mac[:position] + flipped + mac[position + 1 :]}
        assert refusal(keyring, bad).reason == "signature"


def test_an_uppercase_mac_is_refused(keyring: Keyring) -> None:
    envelope = sealed(keyring)
    if envelope["mac"].upper() != envelope["mac"]:
        assert refusal(keyring, {**envelope, "mac": envelope["mac"].upper()}).reason == "signature"


def test_a_secret_differing_under_the_same_id_is_refused() -> None:
    producer = Keyring.from_config({"2024": NEW})
    worker = Keyring.from_config({"2024": OTHER})
    error = refusal(worker, seal(producer, "call", "m", BODY, now=NOW))
    assert error.reason == "signature"
    assert "'2024'" in str(error)


def test_a_re_signed_tampered_envelope_is_accepted_by_the_key_holder(keyring: Keyring) -> None:
    # The test helper computes MACs the same way: if this failed, the tamper tests above
    # would prove nothing.
    envelope = resign(keyring, sealed(keyring, mid="msg-2", iat=NOW - 5))
    assert open_envelope(keyring, envelope, kind="call", max_age=10, now=NOW) == BODY


@pytest.mark.parametrize("iat", [NOW - 10_000.0, NOW + 10_000.0])
def test_a_forged_envelope_is_reported_as_a_bad_signature_whatever_its_time(
    keyring: Keyring, iat: float
) -> None:
    forged = sealed(keyring, iat=iat, mac="0" * 64)
    assert refusal(keyring, forged).reason == "signature"


# -- keys -----------------------------------------------------------------------------------


def test_an_unknown_key_is_refused_naming_the_ids() -> None:
    producer = Keyring.from_config([OTHER])
    worker = Keyring.from_config([NEW, OLD])
    error = refusal(worker, seal(producer, "call", "m", BODY, now=NOW))
    assert error.reason == "unknown-key"
    message = str(error)
    assert repr(producer.signing_id) in message
    for key_id in worker.key_ids:
        assert repr(key_id) in message
    assert "rotat" in message
    assert "old secret" in message
    for secret in (NEW, OLD, OTHER):
        assert secret not in message


def test_rotation_old_envelopes_still_open_and_new_ones_use_the_new_key() -> None:
    before = Keyring.from_config([OLD])
    during = Keyring.from_config([NEW, OLD])
    after = Keyring.from_config([NEW])

    old_envelope = seal(before, "call", "m", BODY, now=NOW)
    assert open_envelope(during, old_envelope, kind="call", max_age=5, now=NOW) == BODY

    new_envelope = seal(during, "call", "m", BODY, now=NOW)
    assert new_envelope["kid"] == during.signing_id == after.signing_id != before.signing_id
    assert open_envelope(after, new_envelope, kind="call", max_age=5, now=NOW) == BODY
    assert open_envelope(during, new_envelope, kind="call", max_age=5, now=NOW) == BODY

    assert refusal(after, old_envelope).reason == "unknown-key"
    assert refusal(before, new_envelope).reason == "unknown-key"


def test_rotation_with_named_keys() -> None:
    before = Keyring.from_config({"k1": OLD})
    during = Keyring.from_config({"k2": NEW, "k1": OLD})
    assert during.signing_id == "k2"
    envelope = seal(before, "weave", "m", BODY, now=NOW)
    assert envelope["kid"] == "k1"
    assert open_envelope(during, envelope, kind="weave", max_age=5, now=NOW) == BODY


# -- time -----------------------------------------------------------------------------------


def test_an_expired_envelope_is_refused(keyring: Keyring) -> None:
    envelope = sealed(keyring)
    error = refusal(keyring, envelope, max_age=300.0, now=NOW + 300.5)
    assert error.reason == "expired"
    assert "300" in str(error)
    assert "max_age" in str(error)


def test_an_envelope_exactly_max_age_old_is_accepted(keyring: Keyring) -> None:
    envelope = seal(keyring, "call", "m", BODY, now=1000.0)
    assert open_envelope(keyring, envelope, kind="call", max_age=300.0, now=1300.0) == BODY


def test_an_envelope_from_the_future_is_refused(keyring: Keyring) -> None:
    envelope = sealed(keyring)
    error = refusal(keyring, envelope, now=NOW - MAX_CLOCK_SKEW - 1.0)
    assert error.reason == "future"
    assert "clock" in str(error)


def test_a_little_clock_skew_is_tolerated(keyring: Keyring) -> None:
    envelope = sealed(keyring)
    opened = open_envelope(keyring, envelope, kind="call", max_age=1.0, now=NOW - MAX_CLOCK_SKEW)
    assert opened == BODY


# -- kind and message id ----------------------------------------------------------------------


def test_the_wrong_kind_is_refused(keyring: Keyring) -> None:
    error = refusal(keyring, sealed(keyring), kind="reply")
    assert error.reason == "kind"
    assert "'reply'" in str(error)
    assert "'call'" in str(error)


def test_the_wrong_message_id_is_refused(keyring: Keyring) -> None:
    error = refusal(keyring, sealed(keyring), message_id="msg-2")
    assert error.reason == "message-id"
    assert "'msg-1'" in str(error)
    assert "'msg-2'" in str(error)


def test_a_long_value_from_the_wire_is_shortened_in_messages(keyring: Keyring) -> None:
    error = refusal(keyring, sealed(keyring, kind="x" * 5000))
    assert error.reason == "kind"
    assert len(str(error)) < 500


# -- malformed --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "envelope",
    [None, [], "envelope", b"envelope", 42, ("wove", 1)],
    ids=repr,
)
def test_something_other_than_a_dict_is_malformed(keyring: Keyring, envelope: object) -> None:
    error = refusal(keyring, envelope)
    assert error.reason == "malformed"
    assert type(envelope).__name__ in str(error)


def test_a_json_string_of_an_envelope_is_malformed(keyring: Keyring) -> None:
    assert refusal(keyring, json.dumps(sealed(keyring))).reason == "malformed"


@pytest.mark.parametrize("missing", ["wove", "kind", "kid", "iat", "mid", "body", "mac"])
def test_a_missing_field_is_malformed(keyring: Keyring, missing: str) -> None:
    envelope = sealed(keyring)
    del envelope[missing]
    error = refusal(keyring, envelope)
    assert error.reason == "malformed"
    assert f"missing fields: {missing}" in str(error)


@pytest.mark.parametrize("extra", ["extra", "MAC", 1, None])
def test_an_extra_field_is_malformed(keyring: Keyring, extra: object) -> None:
    envelope: dict[Any, Any] = sealed(keyring)
    envelope[extra] = "x"
    error = refusal(keyring, envelope)
    assert error.reason == "malformed"
    assert repr(extra) in str(error)


def test_an_empty_dict_is_malformed(keyring: Keyring) -> None:
    assert refusal(keyring, {}).reason == "malformed"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("wove", "1"),
        ("wove", True),
        ("wove", 1.0),
        ("wove", None),
        ("kind", 1),
        ("kind", None),
        ("kind", b"call"),
        ("kid", None),
        ("kid", ["k"]),
        ("mid", 5),
        ("mid", None),
        ("body", b"aGVsbG8="),
        ("body", None),
        ("mac", 1),
        ("mac", None),
        ("mac", b"00"),
        ("mac", "é" * 64),
        ("iat", "1718000000.0"),
        ("iat", None),
        ("iat", True),
        ("iat", float("nan")),
        ("iat", float("inf")),
        ("iat", float("-inf")),
        ("iat", 1e300),
        ("iat", 10**400),
        ("iat", [NOW]),
    ],
    ids=lambda value: repr(value)[:20],
)
def test_a_field_of_the_wrong_type_is_malformed(
    keyring: Keyring, field: str, value: object
) -> None:
    error = refusal(keyring, sealed(keyring, **{field: value}))
    assert error.reason == "malformed"
    assert repr(field) in str(error)


@pytest.mark.parametrize("body", ["!!!!", "aGVsbG8", "aGVs bG8=", "aGVsbG8=\n", "é"])
def test_a_body_that_is_not_base64_is_malformed(keyring: Keyring, body: str) -> None:
    error = refusal(keyring, sealed(keyring, body=body))
    assert error.reason == "malformed"
    assert "base64" in str(error)


def test_a_json_round_trip_of_a_non_finite_time_is_malformed(keyring: Keyring) -> None:
    wire = json.loads(json.dumps(sealed(keyring, iat=float("inf"))))
    assert refusal(keyring, wire).reason == "malformed"


def test_the_malformed_message_says_what_was_expected_and_how_to_fix(keyring: Keyring) -> None:
    message = str(refusal(keyring, {"wove": 1}))
    assert "body, iat, kid, kind, mac, mid, wove" in message
    assert "same wove version" in message


# -- order of the checks ------------------------------------------------------------------------


def test_version_is_refused(keyring: Keyring) -> None:
    error = refusal(keyring, sealed(keyring, wove=2))
    assert error.reason == "version"
    assert "version 2" in str(error)
    assert f"version {VERSION}" in str(error)


def test_shape_is_checked_before_version(keyring: Keyring) -> None:
    assert refusal(keyring, sealed(keyring, wove=2, kid=None)).reason == "malformed"


def test_version_is_checked_before_kind(keyring: Keyring) -> None:
    assert refusal(keyring, sealed(keyring, wove=2), kind="reply").reason == "version"


def test_kind_is_checked_before_the_key(keyring: Keyring) -> None:
    assert refusal(keyring, sealed(keyring, kid="nobody"), kind="reply").reason == "kind"


def test_the_key_is_checked_before_the_base64(keyring: Keyring) -> None:
    assert refusal(keyring, sealed(keyring, kid="nobody", body="!!")).reason == "unknown-key"


def test_the_base64_is_checked_before_the_mac(keyring: Keyring) -> None:
    assert refusal(keyring, sealed(keyring, body="!!", mac="0" * 64)).reason == "malformed"


def test_the_mac_is_checked_before_the_time(keyring: Keyring) -> None:
    envelope = sealed(keyring, mac="0" * 64)
    assert refusal(keyring, envelope, now=NOW + 10_000).reason == "signature"
    assert refusal(keyring, envelope, now=NOW - 10_000).reason == "signature"


def test_the_time_is_checked_before_the_message_id(keyring: Keyring) -> None:
    envelope = sealed(keyring)
    assert refusal(keyring, envelope, now=NOW + 1000, message_id="x").reason == "expired"
    assert refusal(keyring, envelope, now=NOW - 1000, message_id="x").reason == "future"


# -- the error ----------------------------------------------------------------------------------


def test_envelope_error_is_a_value_error_and_a_wove_error(keyring: Keyring) -> None:
    error = refusal(keyring, None)
    assert isinstance(error, ValueError)
    assert isinstance(error, WoveError)


def test_envelope_error_survives_pickling(keyring: Keyring) -> None:
    error = refusal(keyring, sealed(keyring), kind="reply")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is EnvelopeError
    assert copy.reason == "kind"
    assert str(copy) == str(error)


# -- keyring ------------------------------------------------------------------------------------


def test_key_ids_are_derived_from_the_secret() -> None:
    keyring = Keyring.from_config([NEW, OLD.encode()])
    expected = [
        hmac.new(secret.encode(), b"wove key id", hashlib.sha256).hexdigest()[:12]
        for secret in (NEW, OLD)
    ]
    assert list(keyring.key_ids) == expected
    assert keyring.signing_id == expected[0]
    assert derive_key_id(NEW.encode()) == expected[0]
    assert keyring.keys == ((expected[0], NEW.encode()), (expected[1], OLD.encode()))


def test_a_str_secret_is_utf8_encoded() -> None:
    secret = "ключ-" * 8
    assert Keyring.from_config([secret]) == Keyring.from_config([secret.encode("utf-8")])
    assert Keyring.from_config([secret]).keys[0][1] == secret.encode("utf-8")


def test_a_mapping_keeps_its_order_and_the_first_signs() -> None:
    keyring = Keyring.from_config({"b-new": NEW, "a-old": OLD.encode()})
    assert keyring.key_ids == ("b-new", "a-old")
    assert keyring.signing_id == "b-new"
    assert keyring.secret("a-old") == OLD.encode()
    assert keyring.secret("zzz") is None


def test_a_tuple_of_secrets_is_accepted() -> None:
    assert Keyring.from_config((NEW, OLD)).key_ids == Keyring.from_config([NEW, OLD]).key_ids


def test_the_repr_hides_the_secrets() -> None:
    for keyring in (
        Keyring.from_config([NEW, OLD]),
        Keyring.from_config({"k1": NEW.encode(), "k2": OLD}),
    ):
        for text in (repr(keyring), str(keyring), f"{keyring!r}", repr([keyring])):
            assert "secret" not in text
            assert "nnnn" not in text
            assert "oooo" not in text
            for key_id in keyring.key_ids:
                assert repr(key_id) in text


def test_the_keyring_is_frozen() -> None:
    keyring = Keyring.from_config([NEW])
    with pytest.raises(dataclasses.FrozenInstanceError):
        keyring.keys = ()  # type: ignore[misc]
    assert keyring == Keyring.from_config([NEW])
    assert hash(keyring) == hash(Keyring.from_config([NEW]))
    assert keyring != Keyring.from_config([OLD])


def test_a_keyring_built_directly_is_checked() -> None:
    assert Keyring((("k", NEW.encode()),)).signing_id == "k"
    with pytest.raises(InvalidOptionError):
        Keyring(())
    with pytest.raises(InvalidOptionError):
        Keyring((("k", NEW),))  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError):
        Keyring((("k", b"short"),))
    with pytest.raises(InvalidOptionError):
        Keyring((("k", NEW.encode()), ("k", OLD.encode())))
    with pytest.raises(InvalidOptionError):
        Keyring(("k",))  # type: ignore[arg-type]


@pytest.mark.parametrize("config", [[], (), {}], ids=repr)
def test_an_empty_config_is_refused(config: Any) -> None:
    with pytest.raises(InvalidOptionError, match="at least one secret"):
        Keyring.from_config(config)


@pytest.mark.parametrize(
    "config", [NEW, NEW.encode(), bytearray(NEW.encode())], ids=["str", "bytes", "bytearray"]
)
def test_a_bare_secret_is_refused(config: Any) -> None:
    with pytest.raises(InvalidOptionError, match=r"bare .*keys=\[secret\]"):
        Keyring.from_config(config)


@pytest.mark.parametrize(
    "config",
    [[123], [None], [NEW, 1.5], [bytearray(NEW.encode())], {"k": 5}, {"k": None}],
    ids=repr,
)
def test_a_secret_that_is_not_str_or_bytes_is_refused(config: Any) -> None:
    with pytest.raises(InvalidOptionError, match="must be a str or bytes"):
        Keyring.from_config(config)


@pytest.mark.parametrize("config", [{NEW, OLD}, frozenset({NEW}), iter([NEW]), 42], ids=repr)
def test_an_unordered_or_odd_config_is_refused(config: Any) -> None:
    with pytest.raises(InvalidOptionError, match="list of secrets or a mapping"):
        Keyring.from_config(config)


def test_a_duplicate_secret_is_refused() -> None:
    with pytest.raises(InvalidOptionError, match="appears twice"):
        Keyring.from_config([NEW, OLD, NEW])
    with pytest.raises(InvalidOptionError, match="appears twice"):
        Keyring.from_config([NEW, NEW.encode()])


@pytest.mark.parametrize("key_id", [1, None, "", "a\nb", b"k"], ids=repr)
def test_a_bad_key_id_is_refused(key_id: Any) -> None:
    with pytest.raises(InvalidOptionError, match="key id must be a non-empty str"):
        Keyring.from_config({key_id: NEW})


@pytest.mark.parametrize(
    "config",
    [["s" * 31], [NEW, "short"], {"k": b"x" * 31}, ["é" * 15]],
    ids=["31 chars", "second", "mapping", "30 utf-8 bytes"],
)
def test_a_short_secret_is_refused_saying_how_to_make_one(config: Any) -> None:
    with pytest.raises(InvalidOptionError) as caught:
        Keyring.from_config(config)
    message = str(caught.value)
    assert "shorter than the minimum of 32" in message
    assert 'python -c "import secrets; print(secrets.token_urlsafe(48))"' in message
    assert "sss" not in message


def test_a_32_byte_secret_is_enough() -> None:
    assert Keyring.from_config(["s" * 32]).keys[0][1] == b"s" * 32
    assert Keyring.from_config(["é" * 16]).keys[0][1] == ("é" * 16).encode()


# -- speed --------------------------------------------------------------------------------------


def test_seal_and_open_are_fast() -> None:
    keyring = Keyring.from_config([NEW, OLD])
    body = bytes(200)
    envelope = seal(keyring, "call", "msg-1", body)
    number = 2000

    def best(statement: Any) -> float:
        return min(timeit.repeat(statement, number=number, repeat=5)) / number

    sealing = best(lambda: seal(keyring, "call", "msg-1", body))
    opening = best(
        lambda: open_envelope(keyring, envelope, kind="call", max_age=60.0, message_id="msg-1")
    )
    # The target is well under 50 µs; this bound is loose so a busy machine does not fail.
    assert sealing < 100e-6, f"seal took {sealing * 1e6:.1f} µs"
    assert opening < 100e-6, f"open took {opening * 1e6:.1f} µs"
