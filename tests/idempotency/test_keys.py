"""Key parsing, store keys, and the digests of what a client sent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard import ConfigurationError, InvalidIdempotencyKey
from sloguard.idempotency import parse_idempotency_key
from sloguard.idempotency.keys import (
    FINGERPRINT_BYTES,
    MAX_KEY_LENGTH,
    Fingerprinter,
    principal_of,
    request_fingerprint,
    scoped_key,
    store_key,
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


# --- what leaves the process is a digest ---------------------------------------------

CARD = b'{"card": "4242424242424242", "cvc": "123"}'


@pytest.mark.parametrize("size", [0, 1, 42, 127, 128, 4096])
def test_a_fingerprint_is_a_digest_whatever_the_size(size: int) -> None:
    body = (CARD * 100)[:size]
    for fingerprint in (
        request_fingerprint(b"", [body]),
        request_fingerprint(b"q=1", [body[:3], body[3:]]),
        Fingerprinter().request("POST", "/pay", b"", [body]),
        Fingerprinter(b"secret").request("POST", "/pay", b"q=1", [body]),
    ):
        assert len(fingerprint) == FINGERPRINT_BYTES
        if size >= 8:
            assert body[:8] not in fingerprint


def test_a_small_body_never_reaches_the_store_in_clear() -> None:
    # Under 128 bytes a request was its own fingerprint: a card number stored verbatim.
    assert b"4242" not in request_fingerprint(b"", [CARD])
    assert b"4242" not in Fingerprinter().request("POST", "/pay", b"", [CARD])


def test_the_fingerprint_covers_method_path_query_and_body() -> None:
    fingerprint = Fingerprinter().request
    base = fingerprint("POST", "/pay", b"a=1", [CARD])
    assert base == fingerprint("POST", "/pay", b"a=1", [CARD[:5], CARD[5:]])
    assert base != fingerprint("PATCH", "/pay", b"a=1", [CARD])
    assert base != fingerprint("POST", "/pay/", b"a=1", [CARD])
    assert base != fingerprint("POST", "/pay", b"a=2", [CARD])
    assert base != fingerprint("POST", "/pay", b"a=1", [CARD + b" "])


@given(
    st.tuples(st.text(max_size=8), st.text(max_size=20), st.binary(max_size=20), st.binary()),
    st.tuples(st.text(max_size=8), st.text(max_size=20), st.binary(max_size=20), st.binary()),
)
def test_no_split_between_method_path_query_and_body_collides(
    one: tuple[str, str, bytes, bytes], other: tuple[str, str, bytes, bytes]
) -> None:
    fingerprint = Fingerprinter().request
    same = fingerprint(*one[:3], [one[3]]) == fingerprint(*other[:3], [other[3]])
    assert same == (one == other)


def test_a_secret_keys_every_digest() -> None:
    plain, keyed, other = Fingerprinter(), Fingerprinter(b"deploy-1"), Fingerprinter("deploy-2")
    args = ("POST", "/pay", b"", [CARD])
    assert keyed.request(*args) == Fingerprinter(b"deploy-1").request(*args)
    assert len({plain.request(*args), keyed.request(*args), other.request(*args)}) == 3
    assert len({f.principal("Bearer x") for f in (plain, keyed, other)}) == 3
    assert len({f.log_id("order-42") for f in (plain, keyed, other)}) == 3
    # A secret of any length works (BLAKE2b keys stop at 64 bytes: it is digested first).
    assert Fingerprinter(b"k" * 1000).request(*args) != Fingerprinter(b"k" * 999).request(*args)


@pytest.mark.parametrize("secret", [b"", "", 42])
def test_an_unusable_secret_is_a_configuration_error(secret: object) -> None:
    with pytest.raises(ConfigurationError, match="secret"):
        Fingerprinter(secret)  # type: ignore[arg-type]


def test_each_kind_of_digest_is_its_own() -> None:
    # Personalised per kind: a principal digest never equals the fingerprint of the same bytes.
    fingerprinter = Fingerprinter()
    assert fingerprinter.principal("x") != fingerprinter.log_id("x")
    assert bytes.fromhex(fingerprinter.principal("x")) != fingerprinter.request("", "", b"", [b"x"])


def test_a_principal_is_a_digest_and_no_credential_is_anonymous() -> None:
    fingerprinter = Fingerprinter()
    digest = fingerprinter.principal(b"Bearer top-secret")
    assert len(digest) == 32
    assert int(digest, 16) >= 0
    assert digest == fingerprinter.principal("Bearer top-secret")
    assert digest != fingerprinter.principal(b"Bearer top-secreT")
    assert fingerprinter.principal(b"") == fingerprinter.principal("") == ""


def test_a_log_id_is_short_and_never_the_key() -> None:
    log_id = Fingerprinter().log_id("order-42")
    assert len(log_id) == 12
    assert "order" not in log_id
    assert log_id == Fingerprinter().log_id("order-42")
    assert log_id != Fingerprinter().log_id("order-43")


# --- store keys ------------------------------------------------------------------------


@given(st.sampled_from(["", "Bearer a", "Bearer b", "Basic dXNlcjpwYXNz"]), keys)
def test_a_store_key_gives_its_principal_back_and_holds_no_credential(
    credential: str, key: str
) -> None:
    principal = Fingerprinter().principal(credential)
    made = store_key(principal, key)
    assert principal_of(made) == principal
    assert made.endswith(key)
    if credential:
        assert credential not in made


@given(st.sampled_from(["", "Bearer a", "Bearer b"]), keys, st.sampled_from(["", "Bearer a"]), keys)
def test_store_keys_never_collide_across_principals(c1: str, k1: str, c2: str, k2: str) -> None:
    principal = Fingerprinter().principal
    assert (store_key(principal(c1), k1) == store_key(principal(c2), k2)) == ((c1, k1) == (c2, k2))


def test_a_key_without_a_principal_belongs_to_the_anonymous_one() -> None:
    assert principal_of("k") == principal_of("\x1fk") == ""


def test_the_middlewares_scoped_key_holds_no_credential() -> None:
    # The key IdempotencyMiddleware made held the Authorization header in clear.
    key = scoped_key("Bearer top-secret", "POST", "/items", "order-42")
    assert "top-secret" not in key
    assert principal_of(key) == Fingerprinter().principal("Bearer top-secret")
