"""``sloguard demo``: an overload scenario on loopback, narrated, with a report.

``run_demo(DemoConfig(duration_s=60))`` makes two runs of the same overload
(shedding off, then on), prints the live table, and writes ``demo-report.html``
and, with matplotlib installed, ``demo-report.png``. See docs/demo.md.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sloguard.demo.report import summary_lines, write_html, write_png
from sloguard.demo.scenario import (
    CAPABILITY,
    DemoConfig,
    Outcome,
    Phase,
    PhaseStats,
    RunResult,
    free_port,
    run_once,
)
from sloguard.demo.terminal import Narrator

__all__ = [
    "CAPABILITY",
    "DemoConfig",
    "DemoResult",
    "Outcome",
    "Phase",
    "PhaseStats",
    "RunResult",
    "run_demo",
]


@dataclass(frozen=True, slots=True)
class DemoResult:
    config: DemoConfig
    runs: tuple[RunResult, RunResult]
    """Shedding off, then on."""
    html: Path
    png: Path | None
    png_skipped: str | None
    """Why there is no PNG (matplotlib missing), else None."""


def run_demo(
    config: DemoConfig | None = None,
    *,
    out_dir: str | Path = ".",
    out: TextIO | None = None,
    live: bool | None = None,
) -> DemoResult:
    """Run the scenario twice (shedding off, on), narrate it on ``out``, write the report."""
    config = config or DemoConfig()
    out = out if out is not None else sys.stdout
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    port = config.port or free_port(config.host)
    narrator = Narrator(config, out, live=live)
    narrator.introduce(f"http://{config.host}:{port}")
    shedding_log = logging.getLogger("sloguard.shedding")
    shedding_log.addHandler(narrator)
    propagate, level = shedding_log.propagate, shedding_log.level
    shedding_log.propagate = False  # the narrator prints what matters of it
    shedding_log.setLevel(logging.INFO)
    runs: list[RunResult] = []
    try:
        for shedding in (False, True):
            narrator.start_run(shedding)
            runs.append(run_once(config, shedding, port, narrator.progress))
    finally:
        shedding_log.removeHandler(narrator)
        shedding_log.propagate, shedding_log.level = propagate, level
    off, on = runs
    html_path = directory / "demo-report.html"
    write_html(html_path, config, runs)
    png_path: Path | None = directory / "demo-report.png"
    assert png_path is not None
    skipped = write_png(png_path, config, runs)
    if skipped is not None:
        png_path = None
    out.write("\n" + "\n".join(summary_lines(config, runs)) + "\n")
    out.write(f"\nreport: {html_path}")
    out.write(f", {png_path}\n" if png_path else f" (PNG skipped: {skipped})\n")
    out.flush()
    return DemoResult(config, (off, on), html_path, png_path, skipped)
