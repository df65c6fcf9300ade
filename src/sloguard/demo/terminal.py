"""The demo's narration: a table with one row per phase of each run, updated live.

On a terminal the current row is rewritten in place about five times a second
and what SLOGuard does is printed above it as it happens: the concurrency
limiter starting to refuse and stopping (from its state, sampled from the
server), and the SLO window's own log lines; into a pipe or a file each row is
printed once, when its phase is over.
"""

from __future__ import annotations

import logging
import time
from typing import TextIO

from sloguard.demo.scenario import CAPABILITY, DemoConfig, Phase, PhaseStats, RunResult

COLUMNS = (
    ("shedding", 8),
    ("phase", 14),
    ("req/s", 5),
    ("sent", 5),
    ("high ok", 7),
    ("high p95", 9),
    ("low shed", 8),
    ("low ok", 6),
)


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1%}"


def p95_text(stats: PhaseStats) -> str:
    if stats.high_p95_ms is None:
        return "-"
    return ("≥" if stats.high_p95_censored else "") + f"{stats.high_p95_ms:.0f} ms"


def row(shedding: bool, stats: PhaseStats) -> str:
    cells = (
        "on" if shedding else "off",
        stats.phase.name,
        f"{stats.phase.rate:.0f}",
        str(stats.sent),
        percent(stats.high_ok_ratio),
        p95_text(stats),
        percent(stats.low_shed_ratio),
        percent(stats.low_ok_ratio),
    )
    return "  ".join(
        cell.ljust(width) if i < 2 else cell.rjust(width)
        for i, (cell, (_, width)) in enumerate(zip(cells, COLUMNS, strict=True))
    )


def header() -> str:
    return "  ".join(
        name.ljust(width) if i < 2 else name.rjust(width) for i, (name, width) in enumerate(COLUMNS)
    )


class Narrator(logging.Handler):
    """Prints the table as the runs go; also a logging handler for SLOGuard's lines."""

    def __init__(self, config: DemoConfig, out: TextIO, *, live: bool | None = None) -> None:
        super().__init__(logging.INFO)
        self.config = config
        self.out = out
        self.live = out.isatty() if live is None else live
        self.shedding = False
        self.done = 0  # phases of the current run already printed
        self._partial = False
        self._shedding_now = False
        self._run_started = time.monotonic()
        self._seen = 0  # limiter samples already looked at
        self._refusing_since: float | None = None
        self._last_refusal = (0.0, 0)  # (when, refusals so far) of the latest that grew

    def introduce(self, url: str) -> None:
        c = self.config
        p50, p95, p99 = c.targets_ms
        steady, peak = c.phases[0], c.phases[1]
        self._print(
            f"sloguard demo: a service of fixed capacity under {c.load:g}x its load, "
            f"without and with load shedding.\n"
            f"  worker: {c.capacity} requests at a time, ~{c.service_ms:g} ms each "
            f"(capacity ~{c.capacity_rps:.0f} req/s); SLO of {CAPABILITY}: "
            f"p50 {p50:g} ms, p95 {p95:g} ms, p99 {p99:g} ms\n"
            f"  load per run ({c.run_s:g} s): {steady.rate:.0f} req/s, then "
            f"{peak.rate:.0f} req/s, then {steady.rate:.0f} req/s; "
            f"{c.high_share:.0%} X-Priority: high, the rest low; "
            f"clients give up after {c.timeout_s:.3g} s\n"
            f"  watch it live: {url}/slo/ui\n\n{header()}"
        )

    def start_run(self, shedding: bool) -> None:
        self.shedding = shedding
        self.done = 0
        self._shedding_now = False
        self._run_started = time.monotonic()
        self._seen = 0
        self._refusing_since = None
        self._last_refusal = (0.0, 0)

    def progress(self, result: RunResult, elapsed_s: float) -> None:
        """Called by the load generator: print finished phases, redraw the oldest other
        (its figures so far: the requests it sent that have been answered)."""
        self._limiter_events(result)
        phases = self.config.phases
        # A phase's row is final once its last request has been answered or given up on.
        settle = self.config.timeout_s + 0.1
        while self.done < len(phases) and elapsed_s >= phases[self.done].end_s + settle:
            stats = result.phase_stats(self.config, phases[self.done])
            self._print(row(self.shedding, stats))
            self.done += 1
        if self.live and self.done < len(phases):
            current: Phase = phases[self.done]
            if elapsed_s > current.start_s:
                stats = result.phase_stats(self.config, current, until_s=elapsed_s)
                self._partial = True
                self.out.write("\r\x1b[2K" + row(self.shedding, stats) + " …")
                self.out.flush()

    def _limiter_events(self, result: RunResult) -> None:
        """One line when the concurrency limiter starts refusing, one when it has not
        refused for a second."""
        samples = result.limits[self._seen :]
        self._seen += len(samples)
        for sample in samples:
            refused = sample.refused_total
            if refused > self._last_refusal[1]:
                self._last_refusal = (sample.t_s, refused)
                if self._refusing_since is None:
                    self._refusing_since = sample.t_s
                    self._print(
                        f"  on at {sample.t_s:4.1f} s, sloguard: {CAPABILITY} at its "
                        f"concurrency limit ({sample.inflight} in flight, limit {sample.limit},"
                        f" {sample.queued} queued): refusing low, queueing high"
                    )
            elif self._refusing_since is not None and sample.t_s - self._last_refusal[0] >= 1:
                self._refusing_since = None
                self._print(
                    f"  on at {sample.t_s:4.1f} s, sloguard: {CAPABILITY} refused nothing for"
                    f" 1 s ({sample.inflight} in flight, limit {sample.limit})"
                )

    def emit(self, record: logging.LogRecord) -> None:
        """SLOGuard's shedding log: its first line of each episode, and the one ending it."""
        message = record.getMessage()
        stopped = "shedding stopped" in message
        if stopped == self._shedding_now:
            at = time.monotonic() - self._run_started
            self._print(f"  {'on' if self.shedding else 'off'} at {at:4.1f} s, sloguard: {message}")
            self._shedding_now = not stopped

    def _print(self, text: str) -> None:
        if self._partial:
            self.out.write("\r\x1b[2K")
            self._partial = False
        self.out.write(text + "\n")
        self.out.flush()
