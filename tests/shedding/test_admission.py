"""Step 3 alone: admission's two loops, the SLO-window policy and the concurrency limit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sloguard import ConfigurationError, SLOManager
from sloguard._clock import ManualClock
from sloguard.http import Reply
from sloguard.request import GuardedRequest
from sloguard.shedding.admission import WAIT, Admission
from sloguard.shedding.limiter import Permit
from sloguard.slo.schema import Priority
from tests.asgi import http_scope

SLO = """\
capability: {verb: convert, name: pdf}
slo:
  latency: {p50_ms: 100, p95_ms: 100, p99_ms: 1000}
  availability: {target: 0.99}
enforcement: {reject_on_violation: %s, grace_period_days: 0}
shedding:
  min_samples: 10
  retry_after_s: 3
  concurrency: %s
"""
OFF = "{mode: 'off'}"
FIXED_2 = "{mode: fixed, initial: 2, min: 1, queue: {size: 4, max_wait_ms: 500}}"


async def _nothing() -> dict[str, object]:
    return {"type": "http.disconnect"}


class Setup:
    def __init__(self, tmp_path: Path, *, enforce: bool = True, concurrency: str = OFF) -> None:
        (tmp_path / "pdf.yml").write_text(
            SLO % (str(enforce).lower(), concurrency), encoding="utf-8"
        )
        self.clock = ManualClock()
        self.manager = SLOManager(tmp_path, clock=self.clock)
        self.admission = Admission(self.manager, clock=self.clock, random_source=lambda: 0.0)

    def feed(self, n: int, latency_s: float, ok: bool = True) -> None:
        for _ in range(n):
            self.manager.record("convert:pdf", latency_s=latency_s, ok=ok)

    async def ask(self, priority: Priority = "low") -> Permit | Reply | None:
        request = GuardedRequest(http_scope(), _nothing, self.clock(), "convert:pdf", priority)
        slo = self.manager.get_slo("convert:pdf")
        assert slo is not None
        return await self.admission.acquire(request, slo)


async def test_a_compliant_capability_admits_everything(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.feed(50, 0.010)
    assert await s.ask() is None
    assert s.admission.shed_counts("convert:pdf") == {}


async def test_the_window_policy_refuses_low_with_a_problem_and_keeps_critical(
    tmp_path: Path,
) -> None:
    s = Setup(tmp_path)
    s.feed(50, 0.500)  # 5x the p95 target, no concurrency limit: the window loop sheds

    refusal = await s.ask("low")
    assert isinstance(refusal, Reply)
    assert refusal.status == 503
    assert (b"retry-after", b"3") in refusal.headers
    document = json.loads(refusal.body)
    assert (document["error"], document["capability"]) == ("slo_violation", "convert:pdf")
    assert await s.ask("critical") is None
    assert s.admission.shed_counts("convert:pdf") == {"low": 1}
    assert s.admission.rejection_ratios("convert:pdf")["low"] > 0
    status = s.manager.status("convert:pdf")
    assert status is not None
    assert status.shedding


async def test_in_a_dry_run_refusals_are_counted_but_nothing_is_refused(tmp_path: Path) -> None:
    s = Setup(tmp_path, enforce=False, concurrency=FIXED_2)
    s.feed(50, 0.500)

    assert await s.ask("low") is None  # no limit either: the file does not enforce
    assert s.admission.shed_counts("convert:pdf", dry_run=True) == {"low": 1}
    assert s.admission.shed_counts("convert:pdf") == {}
    assert s.admission.concurrency("convert:pdf") is None


async def test_at_the_limit_low_is_refused_and_high_waits_for_a_place(tmp_path: Path) -> None:
    s = Setup(tmp_path, concurrency=FIXED_2)
    first, second = await s.ask("normal"), await s.ask("normal")
    assert isinstance(first, Permit)
    assert isinstance(second, Permit)

    refusal = await s.ask("low")
    assert isinstance(refusal, Reply)
    assert json.loads(refusal.body)["error"] == "concurrency_limit"
    waiting = asyncio.ensure_future(s.ask("high"))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert s.admission.concurrency("convert:pdf") == {
        "limit": 2,
        "inflight": 2,
        "queued": 1,
        "refused": {"concurrency_limit": {"low": 1}},
    }

    s.admission.release(first, 200, 0.010)
    granted = await waiting
    assert isinstance(granted, Permit)
    s.admission.release(second, None, 0.0)  # raised: no sample, the place is free
    s.admission.release(granted, 503, 0.010)  # overloaded: pressure, the place is free
    concurrency = s.admission.concurrency("convert:pdf")
    assert concurrency is not None
    assert (concurrency["inflight"], concurrency["queued"]) == (0, 0)
    assert s.admission.shed_counts("convert:pdf") == {"low": 1}


def test_admit_answers_at_once_and_says_when_a_request_must_wait(tmp_path: Path) -> None:
    s = Setup(tmp_path, concurrency=FIXED_2)
    slo = s.manager.get_slo("convert:pdf")
    assert slo is not None

    def admit(priority: Priority) -> object:
        request = GuardedRequest(http_scope(), _nothing, s.clock(), "convert:pdf", priority)
        return s.admission.admit(request, slo)  # a plain call: no event loop needed

    held = [admit("normal"), admit("normal")]
    assert all(isinstance(permit, Permit) for permit in held)
    assert admit("high") is WAIT  # at the limit: wait() decides (low: a refusal at once)
    s.feed(50, 0.010, ok=False)
    s.clock.advance(1.0)  # the window loop's next look: it sheds low, at once
    refusal = admit("low")
    assert isinstance(refusal, Reply)
    assert json.loads(refusal.body)["error"] == "slo_violation"


async def test_a_request_told_to_wait_gets_the_next_place(tmp_path: Path) -> None:
    s = Setup(tmp_path, concurrency=FIXED_2)
    held = [await s.ask("normal"), await s.ask("normal")]
    request = GuardedRequest(http_scope(), _nothing, s.clock(), "convert:pdf", "high")
    slo = s.manager.get_slo("convert:pdf")
    assert slo is not None
    assert s.admission.admit(request, slo) is WAIT

    waiting = asyncio.ensure_future(s.admission.wait(request))
    await asyncio.sleep(0)
    assert not waiting.done()
    s.admission.release(held[0], 200, 0.010)  # type: ignore[arg-type]
    assert isinstance(await waiting, Permit)


async def test_with_a_limit_the_window_loop_answers_availability_not_latency(
    tmp_path: Path,
) -> None:
    s = Setup(tmp_path, concurrency=FIXED_2)
    s.feed(50, 0.500)  # slow: the limit's business, not a reason to refuse by ratio
    permit = await s.ask("low")
    assert isinstance(permit, Permit)
    s.admission.release(permit, 200, 0.5)
    assert s.admission.rejection_ratios("convert:pdf") == {}

    s.clock.advance(1.0)
    s.feed(50, 0.010, ok=False)  # half the requests fail: 50x the error budget
    refusal = await s.ask("low")
    assert isinstance(refusal, Reply)
    assert json.loads(refusal.body)["error"] == "slo_violation"


@pytest.mark.parametrize(
    "options", [{"shed_status": 500}, {"evaluate_every_s": 0}], ids=["status", "evaluate"]
)
def test_options_that_cannot_work_are_refused(tmp_path: Path, options: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        Admission(SLOManager(tmp_path), clock=ManualClock(), **options)  # type: ignore[arg-type]


async def test_shedding_disabled_means_no_concurrency_limit_either(tmp_path: Path) -> None:
    s = Setup(tmp_path, concurrency=FIXED_2)
    path = tmp_path / "pdf.yml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("shedding:\n", "shedding:\n  enabled: false\n"),
        encoding="utf-8",
    )
    s = Setup.__new__(Setup)
    s.clock = ManualClock()
    s.manager = SLOManager(tmp_path, clock=s.clock)
    s.admission = Admission(s.manager, clock=s.clock, random_source=lambda: 0.0)
    assert [await s.ask("low") for _ in range(5)] == [None] * 5
    assert s.admission.concurrency("convert:pdf") is None


async def test_a_reload_with_a_new_limit_keeps_counting_its_refusals(tmp_path: Path) -> None:
    s = Setup(tmp_path, concurrency=FIXED_2)
    held = [await s.ask("normal"), await s.ask("normal")]
    assert isinstance(await s.ask("low"), Reply)
    (tmp_path / "pdf.yml").write_text(SLO % ("true", FIXED_2.replace("2", "3", 1)), "utf-8")
    s.manager.reload()

    assert await s.ask("normal") is not None  # the new limiter: 3 places, one taken here
    concurrency = s.admission.concurrency("convert:pdf")
    assert concurrency is not None
    assert concurrency["limit"] == 3
    assert concurrency["refused"] == {"concurrency_limit": {"low": 1}}
    assert s.admission.shed_counts("convert:pdf") == {"low": 1}
    assert all(isinstance(permit, Permit) for permit in held)


async def test_no_limit_applies_during_the_grace_period(tmp_path: Path) -> None:
    s = Setup(tmp_path, concurrency=FIXED_2)
    (tmp_path / "pdf.yml").write_text(
        (SLO % ("true", FIXED_2)).replace("grace_period_days: 0", "grace_period_days: 1"), "utf-8"
    )
    s.manager.reload()

    assert [await s.ask("low") for _ in range(3)] == [None, None, None]  # no permits: no limit
    assert s.admission.concurrency("convert:pdf") is None
    s.clock.advance(86_400)
    assert isinstance(await s.ask("low"), Permit)
    assert s.admission.concurrency("convert:pdf") is not None
