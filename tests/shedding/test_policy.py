"""The admission policy driven by a real SLOManager's live status and a manual clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from sloguard import SLOManager
from sloguard._clock import ManualClock
from sloguard.shedding import SheddingPolicy, severity

SLO = """\
capability: {verb: convert, name: pdf}
slo:
  latency: {p50_ms: 100, p95_ms: 100, p99_ms: 1000}
  availability: {target: 0.99}
"""


class Scenario:
    """One capability's manager and policy, fed requests at a controlled clock."""

    def __init__(self, tmp_path: Path, shedding: str = "") -> None:
        (tmp_path / "pdf.yml").write_text(SLO + shedding, encoding="utf-8")
        self.clock = ManualClock(start=10_000.0)
        self.manager = SLOManager(tmp_path, window_seconds=10, buckets=10, clock=self.clock)
        slo = self.manager.get_slo("convert:pdf")
        assert slo is not None
        self.slo = slo
        self.policy = SheddingPolicy(slo.shedding)

    def feed(self, n: int, latency_ms: float, *, ok: bool = True) -> None:
        for _ in range(n):
            self.manager.record("convert:pdf", latency_s=latency_ms / 1000, ok=ok)

    def tick(self, seconds: float = 1.0) -> dict[str, float]:
        self.clock.advance(seconds)
        status = self.manager.status("convert:pdf")
        assert status is not None
        self.policy.update(self.clock(), self.slo, status)
        return dict(self.policy.ratios)


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    return Scenario(tmp_path)


def test_severity_is_the_worst_ratio_to_target(scenario: Scenario) -> None:
    scenario.feed(100, 300)  # p50 and p95 at 300 ms against 100 ms: 3x
    status = scenario.manager.status("convert:pdf")
    assert status is not None
    assert severity(scenario.slo, status) == pytest.approx(3.0, rel=0.02)


def test_availability_counts_as_error_rate_over_budget(scenario: Scenario) -> None:
    scenario.feed(96, 10)
    scenario.feed(4, 10, ok=False)  # 4% errors against a 1% budget
    status = scenario.manager.status("convert:pdf")
    assert status is not None
    assert severity(scenario.slo, status) == pytest.approx(4.0)


def test_a_compliant_capability_sheds_nothing(scenario: Scenario) -> None:
    scenario.feed(100, 20)
    assert scenario.tick() == {}
    assert scenario.policy.active is False


def test_a_severe_violation_sheds_low_at_most_and_normal_partly(scenario: Scenario) -> None:
    scenario.feed(100, 300)
    assert scenario.tick() == {"low": 0.95, "normal": 0.5}
    assert scenario.policy.active is True


def test_a_mild_violation_sheds_low_in_proportion_and_spares_normal(scenario: Scenario) -> None:
    scenario.feed(100, 130)  # p95 130 vs 100: severity 1.3 of a ramp from 1 to 1.5
    ratios = scenario.tick()
    assert set(ratios) == {"low"}
    assert ratios["low"] == pytest.approx(0.95 * 0.6, rel=0.05)


def test_a_persistent_mild_violation_sheds_normal_too(scenario: Scenario) -> None:
    for _ in range(29):
        scenario.feed(20, 130)
        assert "normal" not in scenario.tick()
    scenario.feed(20, 130)
    assert "normal" in scenario.tick(2.0)


def test_high_is_never_shed_by_default_and_critical_never_at_all(scenario: Scenario) -> None:
    for _ in range(40):
        scenario.feed(20, 900)
        ratios = scenario.tick()
    assert set(ratios) == {"low", "normal"}


def test_high_listed_is_shed_only_when_severe_and_persistent(tmp_path: Path) -> None:
    scenario = Scenario(tmp_path, "shedding: {shed_priorities: [low, normal, high]}\n")
    scenario.feed(20, 900)
    assert "high" not in scenario.tick()
    for _ in range(30):
        scenario.feed(20, 900)
        ratios = scenario.tick()
    assert ratios["high"] == 0.25


def test_too_few_samples_never_shed(scenario: Scenario) -> None:
    scenario.feed(19, 5000)
    assert scenario.tick() == {}
    scenario.feed(1, 5000)
    assert scenario.tick() != {}


def test_hovering_at_the_target_does_not_start_shedding(scenario: Scenario) -> None:
    # p95 alternating just over and just under 100 ms: inside the hysteresis band.
    for i in range(30):
        scenario.feed(50, 104 if i % 2 else 97)
        assert scenario.tick() == {}


def test_once_started_shedding_follows_severity_down_without_flapping(scenario: Scenario) -> None:
    scenario.feed(100, 200)
    assert scenario.tick()["low"] == 0.95
    seen = []
    for i in range(12):
        scenario.feed(100, 104 if i % 2 else 102)  # still over target, inside the band
        seen.append(scenario.policy.active)
        scenario.tick()
    assert all(seen)
    assert scenario.policy.active


def test_recovery_is_gradual_and_complete(scenario: Scenario) -> None:
    scenario.feed(100, 300)
    assert scenario.tick()["low"] == 0.95
    lows, compliant = [], []
    for _ in range(25):  # one evaluation a second, as SLOGuard makes them under traffic
        scenario.feed(20, 20)
        lows.append(scenario.tick().get("low", 0.0))
        status = scenario.manager.status("convert:pdf")
        assert status is not None
        compliant.append(status.compliant)
    first_compliant = compliant.index(True)
    assert 5 <= first_compliant <= 10  # the slow samples leave the 10 s window
    assert all(low == 0.95 for low in lows[:first_compliant])
    recovering = lows[first_compliant:]
    assert recovering == sorted(recovering, reverse=True)  # never rises while compliant
    assert 0 < recovering[0] < 0.95  # no cliff
    assert recovering[10] == 0.0
    assert not scenario.policy.active


def test_disabled_shedding_never_sheds(tmp_path: Path) -> None:
    scenario = Scenario(tmp_path, "shedding: {enabled: false}\n")
    scenario.feed(100, 900)
    assert scenario.tick() == {}
