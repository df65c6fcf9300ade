"""sloguard.routing's public names."""

from __future__ import annotations

import sloguard.routing


def test_exported_members() -> None:
    for name in sloguard.routing.__all__:
        assert getattr(sloguard.routing, name) is not None, name
    assert {"create_controller_app", "WorkerRegistry", "HealthChecker"} <= set(
        sloguard.routing.__all__
    )
