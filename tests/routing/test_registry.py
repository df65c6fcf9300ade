"""WorkerRegistry: membership, health, heartbeat expiry and power of two choices."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from sloguard import ConfigurationError
from sloguard._clock import ManualClock
from sloguard.routing import WorkerRegistry

CAP = "convert:document_to_pdf"


def test_p2c_never_picks_the_busiest_of_three_and_spreads_over_the_others() -> None:
    registry = WorkerRegistry(random_source=random.Random(7).randrange)
    for worker_id, outstanding in [("idle", 0), ("light", 1), ("busy", 9)]:
        registry.register(worker_id, f"http://{worker_id}", [CAP]).outstanding = outstanding

    picks = Counter(registry.choose(CAP).id for _ in range(300))  # type: ignore[union-attr]

    # Of any two, the busier loses: "busy" never wins, "light" wins only against "busy".
    assert picks["busy"] == 0
    assert picks["idle"] > picks["light"] > 0


def test_choose_skips_excluded_unhealthy_and_other_capabilities() -> None:
    registry = WorkerRegistry()
    registry.register("a", "http://a", [CAP])
    registry.register("b", "http://b", [CAP])
    registry.register("c", "http://c", ["classify:email"])
    registry.unreachable(registry.get("a"), "ConnectError")  # type: ignore[arg-type]

    assert registry.choose(CAP).id == "b"  # type: ignore[union-attr]
    assert registry.choose(CAP, exclude=["b"]) is None
    assert registry.choose("nothing:here") is None
    assert registry.serves(CAP)
    assert not registry.serves("nothing:here")


def test_heartbeats_expire_only_for_workers_registered_over_http(clock: ManualClock) -> None:
    registry = WorkerRegistry(clock=clock, heartbeat_ttl_s=5)
    dynamic = registry.register("dyn", "http://d", [CAP])
    static = registry.register("static", "http://s", [CAP], static=True)

    clock.advance(5)
    assert registry.is_healthy(dynamic)
    clock.advance(0.1)
    assert not registry.is_healthy(dynamic)
    assert registry.is_healthy(static)
    registry.heartbeat("dyn")
    assert registry.is_healthy(dynamic)
    assert registry.heartbeat("unknown") is None


def test_a_failed_check_ejects_after_the_threshold_and_one_pass_restores() -> None:
    registry = WorkerRegistry()
    worker = registry.register("a", "http://a", [CAP])
    registry.check_failed(worker, "boom", unhealthy_after=2)
    assert registry.is_healthy(worker)
    registry.check_failed(worker, "boom again", unhealthy_after=2)
    assert not registry.is_healthy(worker)
    registry.check_passed(worker)
    assert registry.is_healthy(worker)
    assert worker.last_error == "boom again"  # kept for GET /workers


def test_registering_again_keeps_the_in_flight_count() -> None:
    registry = WorkerRegistry()
    registry.register("a", "http://a/", [CAP]).outstanding = 3
    again = registry.register("a", "http://a2", ["classify:email"])
    assert (again.url, again.outstanding, again.capabilities) == (
        "http://a2",
        3,
        frozenset({"classify:email"}),
    )


def test_bad_options_and_capabilities_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="heartbeat_ttl_s"):
        WorkerRegistry(heartbeat_ttl_s=0)
    with pytest.raises(ConfigurationError, match="not verb:name"):
        WorkerRegistry().register("a", "http://a", ["pdf"])
