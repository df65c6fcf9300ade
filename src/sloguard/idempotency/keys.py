"""Parsing ``Idempotency-Key`` values and deriving the keys and fingerprints stored.

The header follows draft-ietf-httpapi-idempotency-key-header: its value is a
Structured Field string (``"abc"``). Many clients send a bare value instead
(``abc``, as Stripe documents), so both forms are accepted. Either way the key
is 1 to 255 printable ASCII characters.

Nothing a client sent reaches a store in clear except the key itself: the
principal (by default the ``Authorization`` header) and the request (method,
path, query, body) are digests made by a :class:`Fingerprinter`, keyed with a
per-deployment secret when one is configured. docs/idempotency.md lists what is
stored where.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from hashlib import blake2b

from sloguard.exceptions import ConfigurationError, InvalidIdempotencyKey

MAX_KEY_LENGTH = 255
MAX_QUOTED_LENGTH = 2 * MAX_KEY_LENGTH + 2
"""The longest header value a key can have: an sf-string with every character escaped."""

BARE_KEY = re.compile(rb"[!#-~]{1,%d}" % MAX_KEY_LENGTH)
"""The common case, settled by one match: a bare key of printable ASCII, no quote
(its value is the key itself)."""

FINGERPRINT_BYTES = 16
"""The size of a request fingerprint: 128 bits, far beyond accidental collision."""
PRINCIPALS_REMEMBERED = 4096
"""How many principals' digests a :class:`Fingerprinter` keeps at hand (all are
forgotten at once when more arrive: a client sending ever new credentials only
makes each digest be computed afresh)."""
HEADS_REMEMBERED = 1024
"""How many (method, path) pairs' hash states a :class:`Fingerprinter` keeps (~0.5 KiB
each; forgotten all at once, like the principals)."""
SEPARATOR = "\x1f"
"""Between the principal digest and the key in a store key; in neither of them."""


def parse_idempotency_key(raw: bytes) -> str:
    """Return the key carried by a raw header value, or raise ``InvalidIdempotencyKey``."""
    if BARE_KEY.fullmatch(raw):
        return raw.decode("ascii")
    value = raw.strip(b" \t")
    if len(value) > MAX_QUOTED_LENGTH:  # before any unescaping: a huge header costs nothing
        raise InvalidIdempotencyKey(
            f"the value is {len(value)} bytes long; a key of at most {MAX_KEY_LENGTH} "
            f"characters takes at most {MAX_QUOTED_LENGTH}"
        )
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


class Fingerprinter:
    """The digests sloguard makes of what a client sent: request fingerprints, principals,
    and short ids of keys for log lines.

    Without ``secret`` each is a BLAKE2b digest. With one (a per-deployment value of
    any length, kept out of the code and the store), each is keyed BLAKE2b, a MAC as
    HMAC is: whoever reads the store cannot test guesses (a card number, a password in
    a Basic ``Authorization``) against what it holds. Every replica of an app sharing a
    ``RedisStore`` must use the same secret, or none recognises another's keys. Each
    kind of digest has its own BLAKE2b personalisation, so no digest of one kind can
    pass for another.

    One instance serves every request: each digest starts from a copy of a hash state
    keyed once, here.
    """

    __slots__ = ("_heads", "_log", "_principal", "_principals", "_request")

    def __init__(self, secret: bytes | str | None = None) -> None:
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if secret is None:
            key = b""
        elif isinstance(secret, bytes) and secret:
            # BLAKE2b takes keys of up to 64 bytes: a digest of the secret is one.
            key = blake2b(secret, person=b"sloguard-secret").digest()
        else:
            raise ConfigurationError(
                f"the fingerprint secret must be non-empty bytes or text, got {secret!r}"
            )
        self._request = blake2b(key=key, digest_size=FINGERPRINT_BYTES, person=b"sloguard-request")
        self._principal = blake2b(key=key, digest_size=16, person=b"sloguard-princpl")
        self._log = blake2b(key=key, digest_size=6, person=b"sloguard-log-id")
        # A client sends the same credential request after request, and a digest costs
        # ~4% of a replay's instructions; remembered in this process only, never stored.
        self._principals: dict[bytes | str, str] = {}
        # The hash state after a request's method and path, which its retries and the
        # operation's other requests share (~3k instructions of each keyed request).
        self._heads: dict[tuple[str, str], blake2b] = {}

    def request(self, method: str, path: str, query: bytes, body: Sequence[bytes]) -> bytes:
        """A 16-byte digest of what makes two requests under one key "the same": method,
        path, query string and body (``body`` as it arrived, in any number of parts).

        Always a digest, whatever the size: a store never holds a request's body in
        clear. Injective for any method that is an HTTP token (no space): the path
        is length-prefixed, and the query is either ``-`` (none) or length-prefixed
        (the common case, no query, starts from a remembered state of its method and
        path).
        """
        if query:
            digest = self._request.copy()
            prefix = f"{method} {len(path)}:{path}{len(query)}?"
            digest.update(prefix.encode("utf-8", "surrogateescape"))
            digest.update(query)
        else:
            head = self._heads.get((method, path))
            if head is None:
                head = self._head(method, path)
            digest = head.copy()
        for chunk in body:
            digest.update(chunk)
        return digest.digest()

    def _head(self, method: str, path: str) -> blake2b:
        head = self._request.copy()
        head.update(f"{method} {len(path)}:{path}-".encode("utf-8", "surrogateescape"))
        if len(self._heads) >= HEADS_REMEMBERED:
            self._heads.clear()
        self._heads[method, path] = head
        return head

    def principal(self, credential: bytes | str) -> str:
        """The digest that stands for a principal in store keys: ``""`` for none (an
        anonymous request), otherwise 32 hex characters. ``credential`` is what
        identifies the client (the ``Authorization`` header's value, or what a
        configured principal callable returned); it never enters a store."""
        if not credential:
            return ""
        known = self._principals.get(credential)
        if known is not None:
            return known
        digest = self._principal.copy()
        if isinstance(credential, str):
            digest.update(credential.encode("utf-8", "surrogatepass"))
        else:
            digest.update(credential)
        if len(self._principals) >= PRINCIPALS_REMEMBERED:
            self._principals.clear()
        known = self._principals[credential] = digest.hexdigest()
        return known

    def log_id(self, key: str) -> str:
        """A short id of an idempotency key for log lines (12 hex characters): enough to
        match the lines of one key, never the key itself."""
        digest = self._log.copy()
        digest.update(key.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()


def store_key(principal_digest: str, key: str) -> str:
    """The key a store keeps: one principal's idempotency key.

    ``principal_digest`` comes from :meth:`Fingerprinter.principal` (hex or ``""``,
    so never the separator): the store key holds no credential, and
    :func:`principal_of` gives the principal back, which stores use to share their
    room fairly between principals. Method and path are not part of it: a key
    belongs to one operation, and another operation under the same key is a
    different fingerprint (422), not a different key.
    """
    return f"{principal_digest}{SEPARATOR}{key}"


def principal_of(key: str) -> str:
    """The principal digest a store key was made with (``""`` for a key that names none)."""
    principal, separator, _ = key.partition(SEPARATOR)
    return principal if separator else ""


FORWARDED_PRINCIPAL_CHARS = 16
"""How much of the principal digest scopes a key forwarded to a worker: 64 bits, so
that two principals' keys meet only by a collision nobody can aim at without the
credentials (or, with a secret, the secret)."""


def forwarded_key(principal_digest: str, key: str) -> str | None:
    """The ``Idempotency-Key`` value a proxy (the ``/route`` controller) sends on to a
    worker for ``key``, sent by the principal whose :meth:`Fingerprinter.principal` is
    ``principal_digest``; None for an anonymous request (its key goes on as sent).

    An sf-string of the principal digest's first 16 characters, ``.`` and the key:
    every client reaches the worker as the proxy, so the worker's own idempotency
    layer (unchanged) keeps each client's keys apart, and never sees a credential.
    When that would be over 255 characters, the key is replaced by 32 hex characters
    of its digest after ``~`` instead of ``.`` (the two forms never meet).
    """
    if not principal_digest:
        return None
    scope = principal_digest[:FORWARDED_PRINCIPAL_CHARS]
    if len(key) + FORWARDED_PRINCIPAL_CHARS + 1 <= MAX_KEY_LENGTH:
        value = f"{scope}.{key}"
    else:
        digest = blake2b(key.encode("ascii"), digest_size=16, person=b"sloguard-fwd-key")
        value = f"{scope}~{digest.hexdigest()}"
    if '"' in value or "\\" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{value}"'
