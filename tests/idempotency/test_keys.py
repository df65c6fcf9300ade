"""Key parsing, scoping and fingerprints."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard import InvalidIdempotencyKey
from sloguard.idempotency import parse_idempotency_key
from sloguard.idempotency.keys import (
    MAX_KEY_LENGTH,
    request_fingerprint,
    scoped_key,
)

printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
keys = st.text(printable, min_size=1, max_size=MAX_KEY_LENGTH)
bare_keys = keys.filter(lambda k: k == k.strip(" \t") and not k.startswith('"'))


def sf_string(value: str) -> bytes:
    return b'"' + value.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


@given(keys)
def test_every_printable_key_round_trips_as_an_sf_string(key: str) -> None:
    assert parse_idempotency_key(sf_string(key)) == key


@given(bare_keys)
def test_every_printable_key_is_accepted_bare(key: str) -> None:
    assert parse_idempotency_key(key.encode()) == key


@given(bare_keys)
def test_surrounding_whitespace_is_ignored(key: str) -> None:
    assert parse_idempotency_key(b" \t" + key.encode() + b" ") == key


@given(st.binary(min_size=1, max_size=300))
def test_arbitrary_bytes_parse_to_a_valid_key_or_raise(raw: bytes) -> None:
    try:
        key = parse_idempotency_key(raw)
    except InvalidIdempotencyKey:
        return
    assert 1 <= len(key) <= MAX_KEY_LENGTH
    assert all(0x20 <= ord(c) <= 0x7E for c in key)


@given(bare_keys, st.sampled_from([0x00, 0x09, 0x1F, 0x7F, 0x80, 0xFF]))
def test_a_non_printable_byte_is_rejected(key: str, byte: int) -> None:
    raw = key.encode()[:100] + bytes([byte]) + b"x"
    with pytest.raises(InvalidIdempotencyKey, match="printable ASCII"):
        parse_idempotency_key(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b'""', "empty"),
        (b'"', "end with a double quote"),
        (b'"abc', "end with a double quote"),
        (b'"a\\b"', "escaped"),
        (b'"a"b"', "unescaped double quote"),
        (b'"abc\\"', "inside an escape"),
        (b"k" * 256, "256 characters"),
        (b'"' + b"k" * 256 + b'"', "256 characters"),
    ],
)
def test_malformed_keys_say_what_is_wrong(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidIdempotencyKey, match=reason):
        parse_idempotency_key(raw)


def test_an_escaped_quote_at_the_end_is_part_of_the_key() -> None:
    assert parse_idempotency_key(b'"a\\""') == 'a"'


@given(st.text(), st.text(), st.text(), st.text())
def test_scoped_keys_never_collide_across_principals_and_paths(
    p1: str, path1: str, p2: str, path2: str
) -> None:
    same = (p1, path1) == (p2, path2)
    assert (scoped_key(p1, "POST", path1, "k") == scoped_key(p2, "POST", path2, "k")) == same


def test_the_fingerprint_covers_query_and_body() -> None:
    base = request_fingerprint(b"x=1", [b"body"])
    assert base == request_fingerprint(b"x=1", [b"bo", b"dy"])
    assert base != request_fingerprint(b"x=2", [b"body"])
    assert base != request_fingerprint(b"x=1", [b"other"])
    # The boundary matters: moving bytes between query and body changes the print.
    assert request_fingerprint(b"q", [b"b"]) != request_fingerprint(b"", [b"qb"])


@pytest.mark.parametrize("size", [0, 10, 126, 127, 128, 4096])
def test_small_and_large_requests_are_fingerprinted_alike(size: int) -> None:
    """Under 128 bytes the request is its own fingerprint, above it a digest: either way
    the same request gives the same fingerprint however its body is split, and any
    other query or body gives another."""
    body = bytes(range(256)) * 16
    body = body[:size]
    whole = request_fingerprint(b"q=1", [body])
    assert whole == request_fingerprint(b"q=1", [body[:3], body[3:]])
    assert whole != request_fingerprint(b"q=2", [body])
    assert whole != request_fingerprint(b"q=1", [body + b"x"])
    assert whole != request_fingerprint(b"q=1x", [body[1:]])


@pytest.mark.parametrize("size", [0, 10, 124, 125, 126, 127, 4096])
def test_without_a_query_one_message_and_a_split_body_agree(size: int) -> None:
    # One message without a query takes a shortcut; it must give what the general
    # path gives, on both sides of the raw/digest boundary.
    body = (bytes(range(256)) * 16)[:size]
    whole = request_fingerprint(b"", [body])
    assert whole == request_fingerprint(b"", [body[:3], body[3:]])
    assert whole == request_fingerprint(b"", [b"", body])
    assert whole != request_fingerprint(b"", [body + b"x"])
    assert whole != request_fingerprint(b"x", [body])


@pytest.mark.parametrize("size", [10, 4096])
def test_no_split_between_query_and_body_collides(size: int) -> None:
    body = b"b" * size
    assert request_fingerprint(b"q\x1f", [body]) != request_fingerprint(b"q", [b"\x1f" + body])
    assert request_fingerprint(b"1:q", [body]) != request_fingerprint(b"1", [b":q" + body])
