"""sloguard.client's public names, and httpx as a dependency."""

from __future__ import annotations

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


def test_httpx_is_a_dependency_not_an_extra() -> None:
    from importlib.metadata import requires

    core = [r for r in requires("sloguard") or [] if "extra ==" not in r]
    assert any(r.replace(" ", "").startswith("httpx>=") for r in core)
