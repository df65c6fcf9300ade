"""Certificates for TLS tests, made at test time with the ``openssl`` command.

A throwaway CA and leaf certificates it signs, for servers on 127.0.0.1. When
``openssl`` is missing the test is skipped with the reason, unless ``CI`` is
set: then it fails, so that CI never passes without having run it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.redis_server import in_ci

LOOPBACK_NAMES = "IP:127.0.0.1,DNS:localhost"


@dataclass(frozen=True)
class Leaf:
    """A server's certificate (signed by the CA) and its key, as uvicorn takes them."""

    cert: Path
    key: Path

    @property
    def uvicorn(self) -> dict[str, str]:
        return {"ssl_certfile": str(self.cert), "ssl_keyfile": str(self.key)}


class CertificateAuthority:
    """A CA of its own in ``directory`` (``ca.pem``); :meth:`leaf` signs server certificates."""

    def __init__(self, directory: Path, name: str = "sloguard test CA") -> None:
        self.directory = directory
        self.cert = directory / f"{_slug(name)}.pem"
        self._key = directory / f"{_slug(name)}.key"
        _openssl(
            "req", "-x509", *_NEW_KEY, "-keyout", self._key, "-out", self.cert,
            "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    def leaf(self, name: str, alt_names: str = LOOPBACK_NAMES) -> Leaf:
        """A server certificate for ``alt_names`` (its subjectAltName), signed by this CA."""
        key, request = self.directory / f"{name}.key", self.directory / f"{name}.csr"
        cert, extensions = self.directory / f"{name}.pem", self.directory / f"{name}.ext"
        extensions.write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
            f"subjectAltName={alt_names}\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n"
        )
        _openssl("req", "-new", *_NEW_KEY, "-keyout", key, "-out", request, "-subj", f"/CN={name}")
        _openssl(
            "x509", "-req", "-in", request, "-CA", self.cert, "-CAkey", self._key,
            "-CAcreateserial", "-days", "2", "-extfile", extensions, "-out", cert,
        )  # fmt: skip
        return Leaf(cert, key)


_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _slug(name: str) -> str:
    return name.replace(" ", "-")


def _openssl(*args: str | Path) -> None:
    command = shutil.which("openssl")
    if command is None:
        reason = "the openssl command is missing (apt-get install -y openssl)"
        if in_ci():
            pytest.fail(f"{reason} (CI is set: TLS tests must run, not skip)", pytrace=False)
        pytest.skip(reason)
    done = subprocess.run([command, *map(str, args)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"openssl {args[0]} failed: {done.stderr}"
