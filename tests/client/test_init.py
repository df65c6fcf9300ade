"""sloguard.client's public names, and what happens without httpx."""

from __future__ import annotations

import subprocess
import sys

import sloguard.client


def test_exported_members() -> None:
    for name in sloguard.client.__all__:
        assert getattr(sloguard.client, name) is not None, name
    assert {"RetryTransport", "SyncRetryTransport", "Throttled"} <= set(sloguard.client.__all__)


def test_throttled_is_a_sloguard_error_and_not_an_httpx_one() -> None:
    # Not an httpx.TransportError, so that a generic retry-on-transport-error layer
    # above the client does not retry what the throttle refused.
    import httpx

    assert issubclass(sloguard.client.Throttled, sloguard.SloguardError)
    assert not issubclass(sloguard.client.Throttled, httpx.HTTPError)


def test_without_httpx_the_import_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import sloguard\n"  # the rest of sloguard does not need httpx
        "import sloguard.client\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: sloguard.client needs httpx, which is not installed: "
        "pip install 'sloguard[client]'"
    )
