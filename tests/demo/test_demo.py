"""sloguard demo: the scenario against a real controller on loopback, the report, the CLI."""

from __future__ import annotations

import html
import io
import socket
import sys
import threading
from pathlib import Path

import pytest

from sloguard.cli import main
from sloguard.demo import CAPABILITY, DemoConfig, Outcome, Phase, RunResult, run_demo
from sloguard.demo.report import summary_lines, write_html, write_png
from sloguard.demo.scenario import LimitSample
from sloguard.demo.terminal import Narrator
from sloguard.exceptions import ConfigurationError
from sloguard.shedding.limiter import limiter_for
from sloguard.slo.manager import SLOManager


def overload(config: DemoConfig) -> Phase:
    start, rest = config.phases[1], config.phases[2]
    return Phase("overload", start.start_s, rest.end_s, start.rate)


def test_shedding_keeps_high_priority_answered_at_the_cost_of_low(tmp_path: Path) -> None:
    # Real HTTP on a machine that may be loaded: what is asserted follows from how
    # admission works, never from how fast it ran. Off, nothing is refused and the
    # line in front of the worker outgrows the clients' timeout; on, the limiter
    # refuses low at once and lets high wait its turn.
    out = io.StringIO()
    config = DemoConfig(duration_s=6)
    result = run_demo(config, out_dir=tmp_path, out=out, live=False)
    off, on = result.runs

    assert (off.shedding, on.shedding) == (False, True)
    whole = Phase("run", 0.0, config.run_s, 0.0)
    off_run, on_run = off.phase_stats(config, whole), on.phase_stats(config, whole)
    assert off_run.sent == on_run.sent > 150  # the same load, request for request
    assert off_run.low_shed == 0
    assert not off.limits
    assert on.limits  # the limiter was sampled through the run
    assert on.phase_stats(config, overload(config)).low_shed_ratio > 0.3
    # Low never waits at the limit; high is never refused for the limit alone, only
    # when it could not have been answered in time.
    reasons = on.refused_by_reason()
    assert reasons.get("concurrency_limit", 0) > 0
    assert not any(o.priority == "high" and o.reason == "concurrency_limit" for o in on.outcomes)
    assert not any(
        o.priority == "low" and o.reason in ("deadline", "queue_timeout") for o in on.outcomes
    )
    assert on_run.high_ok > off_run.high_ok

    html = result.html.read_text(encoding="utf-8")
    assert html.count("<svg") == 5  # latency and refusals of both runs, the limit of one
    assert html.count("<tr>") == 1 + 2 * len(config.phases)
    for line in summary_lines(config, result.runs):
        assert html_text(line) in html_text(html)
    assert result.png is not None
    assert result.png.read_bytes().startswith(b"\x89PNG")

    text = out.getvalue()
    assert "watch it live: http://127.0.0.1:" in text
    assert sum(1 for line in text.splitlines() if line.startswith(("off ", "on "))) == 8
    assert "sloguard: convert:document_to_pdf at its concurrency limit" in text
    assert "the concurrency limit: " in text
    assert "refused, concurrency_limit: " in text
    assert f"report: {result.html}, {result.png}" in text

    # Nothing left running: the server thread is gone and its port is free again.
    assert not any(t.name == "sloguard-demo-server" for t in threading.enumerate())
    port = int(text.split("http://127.0.0.1:")[1].split("/")[0])
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def html_text(text: str) -> str:
    """``text`` as the report's HTML has it, whitespace aside."""
    return "".join(html.escape(text, quote=False).split())


def test_shedding_on_is_the_adaptive_limit_and_off_is_no_shedding_at_all(
    tmp_path: Path,
) -> None:
    config = DemoConfig(duration_s=20)
    for shedding, mode in ((True, "adaptive"), (False, "off")):
        (tmp_path / "slo.yml").write_text(config.slo_yaml(shedding), encoding="utf-8")
        slo = SLOManager(tmp_path).get_slo(CAPABILITY)
        assert slo is not None
        assert slo.shedding.enabled is shedding
        assert slo.shedding.concurrency.mode == mode
        assert (limiter_for(slo) is not None) is shedding


def test_a_bad_setting_is_named() -> None:
    with pytest.raises(ConfigurationError, match=r"duration must be in \[4.0, 3600.0\], got 1"):
        DemoConfig(duration_s=1)
    with pytest.raises(ConfigurationError, match="port"):
        DemoConfig(port=70_000)


def test_the_cli_refuses_a_bad_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "0"]) == 2
    assert "sloguard demo: --duration must be in" in capsys.readouterr().err


def synthetic_run(config: DemoConfig, shedding: bool) -> RunResult:
    """Outcomes made up for the report's arithmetic: every 5th request is high."""
    outcomes = []
    for i in range(400):
        sent = i * config.run_s / 400
        high = i % 5 == 0
        in_overload = config.phases[1].start_s <= sent < config.phases[2].end_s
        shed = shedding and in_overload and not high
        status = 503 if shed else (0 if in_overload and not shedding else 200)
        outcomes.append(Outcome(sent, "high" if high else "low", status, shed, 0.05))
    return RunResult(shedding, outcomes)


def test_the_report_tells_the_numbers_of_its_runs(tmp_path: Path) -> None:
    config = DemoConfig(duration_s=20)
    runs = [synthetic_run(config, False), synthetic_run(config, True)]
    lines = summary_lines(config, runs)
    assert lines[0].startswith("shedding off: during the overload, 0.0% of high-priority")
    timeout_ms = config.timeout_s * 1000  # no answer counts as the timeout
    assert f"p95 ≥{timeout_ms:.0f} ms in its first seconds" in lines[0]
    assert lines[1].startswith("shedding on: during the overload, 100.0% of high-priority")
    assert "p95 50 ms in its first seconds, 50 ms after" in lines[1]
    assert lines[1].endswith("100.0% of low-priority ones shed")
    write_html(tmp_path / "r.html", config, runs)
    assert "<svg" in (tmp_path / "r.html").read_text(encoding="utf-8")


def limited_run(config: DemoConfig) -> RunResult:
    """A made-up run with shedding on: the limiter refuses low during the overload
    and sends one high away for its deadline."""
    run = synthetic_run(config, True)
    start, end = config.phases[1].start_s, config.phases[2].end_s
    run.outcomes = [
        Outcome(o.sent_s, o.priority, o.status, o.shed, o.latency_s, "concurrency_limit")
        if o.shed
        else o
        for o in run.outcomes
    ]
    run.outcomes.append(Outcome(start + 0.1, "high", 503, True, 0.001, "deadline"))
    refused = 0
    for tick in range(int(config.run_s * 10)):
        t = tick / 10
        overloaded = start <= t < end
        refused += 5 if overloaded else 0
        run.limits.append(
            LimitSample(
                t,
                3 if overloaded else 8,
                3 if overloaded else 1,
                2 if overloaded else 0,
                {"concurrency_limit": {"low": refused}} if refused else {},
            )
        )
    return run


def test_the_report_explains_what_the_limiter_did(tmp_path: Path) -> None:
    config = DemoConfig(duration_s=20)
    runs = [synthetic_run(config, False), limited_run(config)]
    lines = summary_lines(config, runs)
    low_refused = sum(1 for o in runs[1].outcomes if o.reason == "concurrency_limit")
    assert lines[2:] == [
        "  the concurrency limit: 3-3 during the overload (median 3; the worker serves "
        f"{config.capacity} at once), learned from latency alone; in flight at most 3, "
        "queued at most 2 (high priority waits for a place, low never does)",
        f"  refused, concurrency_limit: {low_refused} low (at the concurrency limit (low "
        "priority never waits))",
        "  refused, deadline: 1 high (could not have been answered within the p99 target, "
        "so not served late)",
    ]
    write_html(tmp_path / "r.html", config, runs)
    assert (tmp_path / "r.html").read_text(encoding="utf-8").count("<svg") == 5
    assert write_png(tmp_path / "r.png", config, runs) is None


def test_the_narrator_tells_when_the_limiter_starts_and_stops_refusing() -> None:
    config = DemoConfig(duration_s=20)
    run = limited_run(config)
    out = io.StringIO()
    narrator = Narrator(config, out, live=False)
    narrator.start_run(True)
    narrator.progress(run, float("inf"))
    events = [line for line in out.getvalue().splitlines() if line.startswith("  on at")]
    start, end = config.phases[1].start_s, config.phases[2].end_s
    assert events == [
        f"  on at {start:4.1f} s, sloguard: {CAPABILITY} at its concurrency limit (3 in "
        "flight, limit 3, 2 queued): refusing low, queueing high",
        f"  on at {end + 0.9:4.1f} s, sloguard: {CAPABILITY} refused nothing for 1 s (1 in "
        "flight, limit 8)",
    ]


def test_without_matplotlib_the_png_is_skipped_with_the_way_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    config = DemoConfig(duration_s=20)
    reason = write_png(tmp_path / "r.png", config, [synthetic_run(config, False)])
    assert reason == "matplotlib is not installed: pip install 'sloguard[demo]'"
    assert not (tmp_path / "r.png").exists()


def test_on_a_terminal_the_current_row_is_redrawn_in_place() -> None:
    config = DemoConfig(duration_s=20)
    run = synthetic_run(config, True)
    out = io.StringIO()
    narrator = Narrator(config, out, live=True)
    narrator.start_run(True)
    narrator.progress(run, config.phases[0].end_s / 2)  # within the first phase
    assert out.getvalue().startswith("\r\x1b[2Kon        steady")
    narrator.progress(run, float("inf"))
    rows = [line for line in out.getvalue().split("\n") if line]
    assert len(rows) == len(config.phases)
    assert rows[-1].startswith("on        recovery")
