"""sloguard demo: the scenario against a real controller on loopback, the report, the CLI."""

from __future__ import annotations

import io
import socket
import sys
import threading
from pathlib import Path

import pytest

from sloguard.cli import main
from sloguard.demo import DemoConfig, Outcome, Phase, RunResult, run_demo
from sloguard.demo.report import summary_lines, write_html, write_png
from sloguard.demo.terminal import Narrator
from sloguard.exceptions import ConfigurationError


def overload(config: DemoConfig) -> Phase:
    start, rest = config.phases[1], config.phases[2]
    return Phase("overload", start.start_s, rest.end_s, start.rate)


def test_shedding_keeps_high_priority_answered_at_the_cost_of_low(tmp_path: Path) -> None:
    out = io.StringIO()
    config = DemoConfig(duration_s=6)
    result = run_demo(config, out_dir=tmp_path, out=out, live=False)
    off, on = result.runs

    assert (off.shedding, on.shedding) == (False, True)
    whole = Phase("run", 0.0, config.run_s, 0.0)
    off_run, on_run = off.phase_stats(config, whole), on.phase_stats(config, whole)
    assert off_run.sent == on_run.sent > 150  # the same load, request for request
    assert off_run.low_shed == 0  # shedding off: nothing refused
    assert on.phase_stats(config, overload(config)).low_shed_ratio > 0.3
    assert on.phase_stats(config, config.phases[0]).low_shed == 0  # not before the overload
    assert on_run.high_ok > off_run.high_ok

    html = result.html.read_text(encoding="utf-8")
    assert html.count("<svg") == 4
    assert html.count("<tr>") == 1 + 2 * len(config.phases)
    for line in summary_lines(config, result.runs):
        assert line.replace(" ", "") in html.replace("\n", "").replace(" ", "")
    assert result.png is not None
    assert result.png.read_bytes().startswith(b"\x89PNG")

    text = out.getvalue()
    assert "watch it live: http://127.0.0.1:" in text
    assert sum(1 for line in text.splitlines() if line.startswith(("off ", "on "))) == 8
    assert "sloguard: convert:document_to_pdf: shedding low" in text
    assert f"report: {result.html}, {result.png}" in text

    # Nothing left running: the server thread is gone and its port is free again.
    assert not any(t.name == "sloguard-demo-server" for t in threading.enumerate())
    port = int(text.split("http://127.0.0.1:")[1].split("/")[0])
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


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
