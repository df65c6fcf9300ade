"""What the worker registry accepts over HTTP: worker ids and URLs, the hosts workers may
be on, and the token a registration must carry.

A worker URL is ``http`` or ``https``, names a host (a DNS name, an IPv4
address or a bracketed IPv6 one), may give a port from 1 to 65535 and a path,
and has no user info, query or fragment: :func:`worker_url` checks and
normalises it (scheme and host in lower case, no trailing slash), for
``workers.yml`` and ``POST /workers`` alike. :class:`WorkerHosts` is the
optional allow-list of hosts (``--worker-hosts``). The registration token is
read from, or created in, a file only its owner can read
(:func:`read_or_create_token`), so that ``sloguard worker`` on the same
machine finds it there.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sloguard.exceptions import ConfigurationError

TOKEN_ENV = "SLOGUARD_REGISTRY_TOKEN"
TOKEN_FILE = "registry.token"
"""The token's file in the state directory (``state/registry.token``)."""
DEFAULT_MAX_WORKERS = 256
"""Live workers registered over HTTP at once (static workers are not counted)."""
WORKER_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,200}$"
MAX_URL_CHARS = 2_048

_WORKER_ID = re.compile(WORKER_ID_PATTERN)
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_PATH = re.compile(r"^(?:/[A-Za-z0-9\-._~!$&'()*+,;=:@%]*)*$")
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_worker_id(value: str) -> bool:
    """Whether ``value`` is a worker id: 1 to 200 of ``A-Z a-z 0-9 _ . -``."""
    return _WORKER_ID.match(value) is not None


def worker_url(value: str) -> str:
    """``value`` as a worker's base URL, normalised; :class:`ValueError` saying what is
    wrong with it otherwise (``port must be from 1 to 65535``)."""
    if len(value) > MAX_URL_CHARS:
        raise ValueError(f"must be at most {MAX_URL_CHARS} characters")
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError("must be printable ASCII without spaces")
    scheme, separator, _ = value.partition("://")
    if not separator or scheme.lower() not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if "?" in value or "#" in value:
        raise ValueError("must not have a query or a fragment")
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise ValueError(f"is not a URL: {exc}") from None
    if "@" in parts.netloc:
        raise ValueError("must not contain user info (user:password@)")
    host = parts.hostname or ""
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"[{host}] is not an IPv6 address") from None
        if "%" in host:
            raise ValueError("must not name an IPv6 zone (%)")
        shown = f"[{host}]"
    elif _HOST_NAME.match(host):
        _numeric_host(host)
        shown = host
    else:
        raise ValueError("must name a host (a DNS name or an IP address)")
    if not _PATH.match(parts.path):
        raise ValueError("its path may hold only the characters of RFC 3986 paths")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise ValueError("port must be a number from 1 to 65535")
    netloc = shown if port is None else f"{shown}:{port}"
    return f"{scheme.lower()}://{netloc}{parts.path}".rstrip("/")


def _numeric_host(host: str) -> None:
    # As WHATWG URLs do: a host whose last label is a number is an IPv4 address or
    # nothing (2130706433 and 0x7f.1 reach 127.0.0.1 through the resolver).
    last = host.rsplit(".", 1)[-1]
    if last.isdigit() or last.startswith("0x"):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv4 address (a.b.c.d)") from None


@dataclass(frozen=True, slots=True)
class WorkerHosts:
    """The hosts workers registering over HTTP may be on: IP networks (``10.0.0.0/8``,
    an address alone is a network of one), host names (``example.internal``) and
    subdomains (``*.svc.cluster.local``). A name is matched as written, never
    resolved: list the addresses of workers that register by address."""

    networks: tuple[_Network, ...] = ()
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: str | Iterable[str]) -> WorkerHosts:
        """From ``"127.0.0.0/8,10.0.0.0/8,example.internal"`` (or a list of entries);
        :class:`ConfigurationError` naming an entry that is none of the three."""
        items = entries.split(",") if isinstance(entries, str) else list(entries)
        networks: list[_Network] = []
        names: set[str] = set()
        suffixes: list[str] = []
        for item in (entry.strip().lower() for entry in items):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
                continue
            except ValueError:
                pass
            name = item.removeprefix("*.")
            if not _HOST_NAME.match(name):
                raise ConfigurationError(
                    f"worker hosts: {item!r} is not an address, a network (10.0.0.0/8), "
                    "a host name or *.domain"
                )
            if name != item:
                suffixes.append("." + name)
            else:
                names.add(name)
        if not (networks or names or suffixes):
            raise ConfigurationError("worker hosts: the list is empty")
        return cls(tuple(networks), frozenset(names), tuple(suffixes))

    def allows(self, url: str) -> bool:
        """Whether the host of ``url`` (a :func:`worker_url`) is on the list."""
        host = urlsplit(url).hostname or ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.names or host.endswith(self.suffixes)
        mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.0.0.1 is 10.0.0.1
        return any(
            candidate in network
            for candidate in (address, mapped)
            if candidate is not None
            for network in self.networks
            if network.version == candidate.version
        )

    def __str__(self) -> str:
        entries = [str(n) for n in self.networks] + sorted(self.names)
        return ",".join(entries + ["*" + suffix for suffix in self.suffixes])


def read_or_create_token(path: str | os.PathLike[str]) -> str:
    """The token in ``path``, or a new random one written there readable by its owner
    alone (mode 0600). :class:`ConfigurationError` when the file is readable by others
    (as ssh refuses such a key), empty, or cannot be read or written."""
    path = Path(path)
    if not path.exists():
        _create_token_file(path)
    return read_token_file(path)


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in ``path``; :class:`ConfigurationError` as :func:`read_or_create_token`."""
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigurationError(
                f"{path} is readable by other users (mode {mode:04o}): "
                f"chmod 600 {path}, or remove it for a new token"
            )
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the registry token in {path}: {exc}") from exc
    if not token or not token.isprintable() or " " in token:
        raise ConfigurationError(f"{path}: not a token (one line of printable ASCII)")
    return token


def _create_token_file(path: Path) -> None:
    # Written whole under another name, then linked into place: no process ever reads a
    # half-written token, and of two starting at once the first link wins.
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    except OSError as exc:
        raise ConfigurationError(f"cannot write the registry token to {path}: {exc}") from exc
