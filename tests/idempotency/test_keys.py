"""Key parsing, store keys, and the digests of what a client sent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard import ConfigurationError, InvalidIdempotencyKey
from sloguard.idempotency import parse_idempotency_key
from sloguard.idempotency.keys import (
    HEADS_REMEMBERED,
    MAX_KEY_LENGTH,
    PRINCIPALS_REMEMBERED,
    Fingerprinter,
    forwarded_key,
    principal_of,
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
        (b'"' + b"\\\\" * 400_000 + b'"', "800002 bytes long"),  # refused before unescaping
    ],
)
def test_malformed_keys_say_what_is_wrong(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidIdempotencyKey, match=reason):
        parse_idempotency_key(raw)


def test_the_longest_quoted_value_is_a_key_with_every_character_escaped() -> None:
    assert parse_idempotency_key(b'"' + b"\\\\" * MAX_KEY_LENGTH + b'"') == "\\" * MAX_KEY_LENGTH


def test_an_escaped_quote_at_the_end_is_part_of_the_key() -> None:
    assert parse_idempotency_key(b'"a\\""') == 'a"'


# --- what leaves the process is a digest ---------------------------------------------

CARD = b'{"card": "4242424242424242", "cvc": "123"}'


def test_the_fingerprint_covers_method_path_query_and_body() -> None:
    fingerprint = Fingerprinter().request
    base = fingerprint("POST", "/pay", b"a=1", [CARD])
    assert base == fingerprint("POST", "/pay", b"a=1", [CARD[:5], CARD[5:]])
    assert base != fingerprint("PATCH", "/pay", b"a=1", [CARD])
    assert base != fingerprint("POST", "/pay/", b"a=1", [CARD])
    assert base != fingerprint("POST", "/pay", b"a=2", [CARD])
    assert base != fingerprint("POST", "/pay", b"a=1", [CARD + b" "])


def test_a_remembered_method_and_path_digest_the_same_as_a_fresh_one() -> None:
    warm = Fingerprinter()
    first = warm.request("POST", "/pay", b"", [CARD])
    assert warm.request("POST", "/pay", b"", [CARD]) == first
    assert Fingerprinter().request("POST", "/pay", b"", [CARD]) == first
    assert warm.request("POST", "/pay", b"", [CARD + b" "]) != first  # the state is copied, not fed
    assert warm.request("POST", "/pay", b"", [CARD]) == first


def test_the_remembered_paths_are_bounded() -> None:
    fingerprinter = Fingerprinter()
    reference = Fingerprinter().request("POST", "/0", b"", [CARD])
    for n in range(HEADS_REMEMBERED + 5):
        fingerprinter.request("POST", f"/{n}", b"", [CARD])
    assert len(fingerprinter._heads) <= HEADS_REMEMBERED
    assert fingerprinter.request("POST", "/0", b"", [CARD]) == reference


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


@given(keys, st.text("0123456789abcdef", min_size=32, max_size=32))
def test_a_forwarded_key_is_a_valid_key_scoped_by_the_principal(key: str, principal: str) -> None:
    forwarded = forwarded_key(principal, key)
    assert forwarded is not None
    value = parse_idempotency_key(forwarded.encode("ascii"))  # what the worker's gate reads
    assert len(value) <= MAX_KEY_LENGTH
    assert value.startswith(principal[:16])
    if len(key) <= MAX_KEY_LENGTH - 17:
        assert value == f"{principal[:16]}.{key}"
    else:
        assert value[16] == "~"
        assert len(value) == 16 + 1 + 32


@given(keys, keys)
def test_distinct_keys_of_one_principal_stay_distinct_when_forwarded(a: str, b: str) -> None:
    principal = "0123456789abcdef" * 2
    if a != b:
        assert forwarded_key(principal, a) != forwarded_key(principal, b)


def test_a_forwarded_key_names_no_credential_and_differs_per_principal() -> None:
    fingerprints = Fingerprinter()
    alice = forwarded_key(fingerprints.principal("Bearer alice"), "k")
    bob = forwarded_key(fingerprints.principal("Bearer bob"), "k")
    assert alice is not None
    assert bob is not None
    assert alice != bob
    assert "alice" not in alice
    assert forwarded_key("", "k") is None  # anonymous: the key goes on as sent


def test_remembered_principals_are_bounded_and_digest_the_same() -> None:
    fingerprinter = Fingerprinter(b"deploy-1")
    first = fingerprinter.principal(b"Bearer alice")
    for i in range(PRINCIPALS_REMEMBERED + 10):  # past the bound: all forgotten once
        fingerprinter.principal(f"Bearer {i}")
    assert len(fingerprinter._principals) <= PRINCIPALS_REMEMBERED
    assert fingerprinter.principal(b"Bearer alice") == first
    assert Fingerprinter(b"deploy-1").principal("Bearer alice") == first
