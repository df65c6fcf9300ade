"""Parsing ``Idempotency-Key`` values and deriving the keys and fingerprints stored.

The header follows draft-ietf-httpapi-idempotency-key-header: its value is a
Structured Field string (``"abc"``). Many clients send a bare value instead
(``abc``, as Stripe documents), so both forms are accepted. Either way the key
is 1 to 255 printable ASCII characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from hashlib import blake2b

from sloguard.exceptions import InvalidIdempotencyKey

MAX_KEY_LENGTH = 255

BARE_KEY = re.compile(rb"[!#-~]{1,%d}" % MAX_KEY_LENGTH)
"""The common case, settled by one match: a bare key of printable ASCII, no quote
(its value is the key itself)."""
_RAW_FINGERPRINT_LIMIT = 128
_RAW = b"r"
_NO_QUERY = b"0:"  # the length-prefixed empty query
_RAW_NO_QUERY = _RAW + _NO_QUERY
_RAW_BODY_LIMIT = _RAW_FINGERPRINT_LIMIT - len(_NO_QUERY)


def parse_idempotency_key(raw: bytes) -> str:
    """Return the key carried by a raw header value, or raise ``InvalidIdempotencyKey``."""
    if BARE_KEY.fullmatch(raw):
        return raw.decode("ascii")
    value = raw.strip(b" \t")
    if value[:1] == b'"':
        value = _unquote_sf_string(value)
    elif not value:
        raise InvalidIdempotencyKey("the key is empty")
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            f"the key is {len(value)} characters long; at most {MAX_KEY_LENGTH} are allowed"
        )
    key = value.decode("latin-1")
    if not (value.isascii() and key.isprintable()):
        raise InvalidIdempotencyKey("the key must consist of printable ASCII characters")
    return key


def _unquote_sf_string(value: bytes) -> bytes:
    """Decode an RFC 8941 sf-string (``"..."`` with ``\\"`` and ``\\\\`` escapes)."""
    if len(value) < 2 or value[-1:] != b'"':
        raise InvalidIdempotencyKey("a quoted key must end with a double quote")
    inner = value[1:-1]
    if b"\\" not in inner and b'"' not in inner:
        if not inner:
            raise InvalidIdempotencyKey("the key is empty")
        return inner
    out = bytearray()
    escaped = False
    for byte in inner:
        if escaped:
            if byte not in b'"\\':
                raise InvalidIdempotencyKey('only \\" and \\\\ may be escaped in a quoted key')
            out.append(byte)
            escaped = False
        elif byte == 0x5C:  # backslash
            escaped = True
        elif byte == 0x22:  # an unescaped quote ends the string early
            raise InvalidIdempotencyKey("a quoted key contains an unescaped double quote")
        else:
            out.append(byte)
    if escaped:
        raise InvalidIdempotencyKey("a quoted key ends inside an escape")
    if not out:
        raise InvalidIdempotencyKey("the key is empty")
    return bytes(out)


def scoped_key(principal: str, method: str, path: str, key: str) -> str:
    """The store key: one principal's key for one method and path, never another's.

    Length prefixes make it injective whatever the principal and path contain.
    It holds the principal (by default the ``Authorization`` header) in clear:
    a store that keeps keys outside the process must digest them first.
    """
    return f"{len(principal)}:{principal}\x1f{method}\x1f{len(path)}:{path}\x1f{key}"


def request_fingerprint(query: bytes, body: Sequence[bytes]) -> bytes:
    """A digest of what, beyond the scoped key's method and path, makes two requests
    "the same": the query string and the body.

    The query is length-prefixed, so no split of the same bytes between query and
    body gives the same fingerprint. A request under 128 bytes is its own
    fingerprint: comparing it is exact and skips the hash, the common case for JSON
    APIs (it starts with ``r``; a digest equal to it would be a 128-bit coincidence).
    """
    if not query and len(body) == 1:  # the common case: no query, the body in one message
        if len(body[0]) < _RAW_BODY_LIMIT:
            return _RAW_NO_QUERY + body[0]
        head = _NO_QUERY
    else:
        head = b"%d:%b" % (len(query), query)
        if len(head) + sum(map(len, body)) < _RAW_FINGERPRINT_LIMIT:
            return b"".join((_RAW, head, *body))
    # BLAKE2b-512 cut to 16 bytes: passing digest_size=16 costs more than the hash of a
    # small body (keyword parsing), and either is far beyond accidental collision.
    digest = blake2b(head)
    for chunk in body:
        digest.update(chunk)
    return digest.digest()[:16]
