"""The demo's report: ``demo-report.html`` (charts as inline SVG) and ``demo-report.png``.

The HTML needs nothing but the standard library: its charts are SVG written
here, so ``sloguard demo`` always writes it. The PNG is drawn by matplotlib,
from the same series, when it is installed (``pip install 'sloguard[demo]'``);
without it the PNG is skipped and the demo says how to get it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sloguard.demo.scenario import CAPABILITY, DemoConfig, Phase, RunResult, SeriesPoint
from sloguard.demo.terminal import COLUMNS, p95_text, percent

HIGH, LOW, TARGET, SHED, INFLIGHT = "#1f5fbf", "#d97706", "#c5221f", "#7c3aed", "#059669"

REASONS = {
    "concurrency_limit": "at the concurrency limit (low priority never waits)",
    "deadline": "could not have been answered within the p99 target, so not served late",
    "queue_timeout": "waited for a place as long as allowed",
    "queue_full": "the queue was full of more important requests",
    "slo_violation": "by the SLO window (availability or error budget)",
}
"""What each refusal reason means, in the demo's words."""


@dataclass(frozen=True, slots=True)
class Line:
    label: str
    color: str
    points: Sequence[tuple[float, float | None]]
    dashed: bool = False


def _svg_chart(
    title: str,
    lines: Sequence[Line],
    *,
    x_max: float,
    y_range: tuple[float, float],
    y_ticks: Sequence[tuple[float, str]],
    log: bool = False,
    shade: tuple[float, float] | None = None,
    width: int = 440,
    height: int = 220,
) -> str:
    """A line chart as an SVG element: x in seconds, y linear or log-scaled."""
    left, right, top, bottom = 58, 10, 26, 30
    low, high = y_range

    def y_of(value: float) -> float:
        if log:
            value = max(value, low)
            share = (math.log10(value) - math.log10(low)) / (math.log10(high) - math.log10(low))
        else:
            share = (value - low) / (high - low)
        return top + (1 - min(max(share, 0.0), 1.0)) * (height - top - bottom)

    def x_of(t: float) -> float:
        return left + t / x_max * (width - left - right)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="16" font-size="13" font-weight="600">{html.escape(title)}</text>',
    ]
    if shade is not None:
        x0, x1 = x_of(shade[0]), x_of(shade[1])
        out.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{height - top - bottom}" '
            f'fill="#f3f4f6"/>'
            f'<text x="{(x0 + x1) / 2:.1f}" y="{top + 12}" font-size="10" fill="#6b7280" '
            f'text-anchor="middle">overload</text>'
        )
    out.append(
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" fill="none" stroke="#d1d5db"/>'
    )
    for value, label in y_ticks:
        y = y_of(value)
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end" '
            f'fill="#374151">{label}</text>'
        )
    step = 5 if x_max <= 40 else 10
    for second in range(0, int(x_max) + 1, step):
        out.append(
            f'<text x="{x_of(second):.1f}" y="{height - bottom + 13}" font-size="10" '
            f'text-anchor="middle" fill="#374151">{second}s</text>'
        )
    for line in lines:
        segments: list[list[str]] = [[]]
        for t, point in line.points:
            if point is None:
                segments.append([])
            else:
                segments[-1].append(f"{x_of(t):.1f},{y_of(point):.1f}")
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        for segment in segments:
            if len(segment) > 1:
                out.append(
                    f'<polyline points="{" ".join(segment)}" fill="none" '
                    f'stroke="{line.color}" stroke-width="2"{dash}/>'
                )
            elif segment:
                cx, cy = segment[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{line.color}"/>')
    legend_x = left
    for line in lines:
        out.append(
            f'<line x1="{legend_x}" x2="{legend_x + 16}" y1="{height - 6}" y2="{height - 6}" '
            f'stroke="{line.color}" stroke-width="2"'
            + (' stroke-dasharray="4 3"' if line.dashed else "")
            + f'/><text x="{legend_x + 20}" y="{height - 3}" font-size="10">'
            f"{html.escape(line.label)}</text>"
        )
        legend_x += 30 + 6 * len(line.label)
    out.append("</svg>")
    return "".join(out)


def _latency_ticks(top_ms: float) -> list[tuple[float, str]]:
    ticks = [(10.0, "10 ms"), (100.0, "100 ms"), (1000.0, "1 s")]
    if top_ms > 2000:
        ticks.append((10_000.0, "10 s"))
    return [(v, label) for v, label in ticks if v <= top_ms]


def latency_chart(config: DemoConfig, run: RunResult, series: Sequence[SeriesPoint]) -> str:
    p95_target = config.targets_ms[1]
    top = max(config.timeout_s * 1000 * 1.2, p95_target * 3)
    shade = (config.phases[1].start_s, config.phases[2].end_s)
    return _svg_chart(
        f"p95 latency, shedding {'on' if run.shedding else 'off'}",
        [
            Line("high", HIGH, [(p.t_s, p.high_p95_ms) for p in series]),
            Line("low (admitted)", LOW, [(p.t_s, p.low_p95_ms) for p in series]),
            Line(
                f"p95 target {p95_target:g} ms",
                TARGET,
                [(0.0, p95_target), (config.run_s, p95_target)],
                dashed=True,
            ),
        ],
        x_max=config.run_s,
        y_range=(5.0, top),
        y_ticks=_latency_ticks(top),
        log=True,
        shade=shade,
    )


def shed_chart(config: DemoConfig, run: RunResult, series: Sequence[SeriesPoint]) -> str:
    return _svg_chart(
        f"low-priority requests shed, shedding {'on' if run.shedding else 'off'}",
        [Line("low shed", SHED, [(p.t_s, p.low_shed_ratio) for p in series])],
        x_max=config.run_s,
        y_range=(0.0, 1.0),
        y_ticks=[(0.0, "0%"), (0.5, "50%"), (1.0, "100%")],
        shade=(config.phases[1].start_s, config.phases[2].end_s),
    )


def limit_chart(config: DemoConfig, run: RunResult) -> str:
    """The concurrency limit, the requests in flight and those queued, over the run."""
    samples = run.limits
    top = max([4.0, *(max(s.limit, s.inflight, s.queued) * 1.2 for s in samples)])
    ticks = sorted({0.0, float(config.capacity), round(top / 1.2)})
    return _svg_chart(
        "concurrency limit, shedding on",
        [
            Line("limit", TARGET, [(s.t_s, float(s.limit)) for s in samples]),
            Line("in flight", INFLIGHT, [(s.t_s, float(s.inflight)) for s in samples]),
            Line("queued", HIGH, [(s.t_s, float(s.queued)) for s in samples], dashed=True),
            Line(
                f"worker slots: {config.capacity}",
                "#6b7280",
                [(0.0, float(config.capacity)), (config.run_s, float(config.capacity))],
                dashed=True,
            ),
        ],
        x_max=config.run_s,
        y_range=(0.0, top),
        y_ticks=[(v, f"{v:g}") for v in ticks],
        shade=(config.phases[1].start_s, config.phases[2].end_s),
    )


def summary_lines(config: DemoConfig, runs: Sequence[RunResult]) -> list[str]:
    """What the overload did to high-priority requests, with and without shedding, and
    what the concurrency limiter did about it."""
    lines = []
    start, rest = config.phases[1], config.phases[2]
    overload = Phase("overload", start.start_s, rest.end_s, start.rate)
    target = config.targets_ms[1]
    for run in runs:
        whole = run.phase_stats(config, overload)
        first, after = run.phase_stats(config, start), run.phase_stats(config, rest)
        lines.append(
            f"shedding {'on' if run.shedding else 'off'}: during the overload, "
            f"{percent(whole.high_ok_ratio)} of high-priority requests answered in time; "
            f"their p95 {p95_text(first)} in its first seconds, {p95_text(after)} after "
            f"(target {target:g} ms); {percent(whole.low_shed_ratio)} of low-priority ones shed"
        )
        lines += limiter_lines(config, run, overload)
    return lines


def limiter_lines(config: DemoConfig, run: RunResult, overload: Phase) -> list[str]:
    """How the concurrency limit did it: its range, in flight and queued during the
    overload, and every refusal of the run by reason and priority."""
    samples = run.limits_in(overload.start_s, overload.end_s)
    if not samples:
        return []
    limits = sorted(s.limit for s in samples)
    median = limits[len(limits) // 2]
    lines = [
        f"  the concurrency limit: {limits[0]}-{limits[-1]} during the overload (median "
        f"{median}; the worker serves {config.capacity} at once), learned from latency "
        f"alone; in flight at most {max(s.inflight for s in samples)}, queued at most "
        f"{max(s.queued for s in samples)} (high priority waits for a place, low never does)"
    ]
    counts: dict[tuple[str, str], int] = {}
    for o in run.outcomes:
        if o.shed:
            counts[o.reason, o.priority] = counts.get((o.reason, o.priority), 0) + 1
    for reason, meaning in REASONS.items():
        by_priority = [(p, counts[reason, p]) for p in ("high", "low") if (reason, p) in counts]
        if by_priority:
            who = ", ".join(f"{n} {p}" for p, n in by_priority)
            lines.append(f"  refused, {reason}: {who} ({meaning})")
    return lines


def write_html(path: Path, config: DemoConfig, runs: Sequence[RunResult]) -> None:
    charts = []
    for run in runs:
        series = run.series(config)
        limit = limit_chart(config, run) if run.limits else ""
        charts.append(
            f"<figure>{latency_chart(config, run, series)}{shed_chart(config, run, series)}"
            f"{limit}</figure>"
        )
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in COLUMNS)
    rows = []
    for run in runs:
        for phase in config.phases:
            stats = run.phase_stats(config, phase)
            cells = (
                "on" if run.shedding else "off",
                phase.name,
                f"{phase.rate:.0f}",
                str(stats.sent),
                percent(stats.high_ok_ratio),
                p95_text(stats),
                percent(stats.low_shed_ratio),
                percent(stats.low_ok_ratio),
            )
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    p50, p95, p99 = config.targets_ms
    summary = "".join(f"<li>{html.escape(line)}</li>" for line in summary_lines(config, runs))
    path.write_text(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sloguard demo: overload with and without load shedding</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 16px auto; max-width: 960px;
  padding: 0 12px; color: #1d2330; }}
table {{ border-collapse: collapse; font-variant-numeric: tabular-nums; }}
th, td {{ padding: 3px 8px; border-bottom: 1px solid #e5e7eb; text-align: right; }}
th:nth-child(-n+2), td:nth-child(-n+2) {{ text-align: left; }}
figure {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr));
  gap: 8px; margin: 12px 0; }}
svg {{ width: 100%; height: auto; font-family: system-ui, sans-serif; }}
.muted {{ color: #6b7280; }}
</style></head><body>
<h1>sloguard demo</h1>
<p>{html.escape(CAPABILITY)} behind SLOGuard and the /route controller: one worker that
serves {config.capacity} requests at a time, ~{config.service_ms:g} ms each (about
{config.capacity_rps:.0f} requests a second). Its SLO: p50 {p50:g} ms, p95 {p95:g} ms,
p99 {p99:g} ms. Each run sends {config.phases[0].rate:.0f} req/s, then
{config.phases[1].rate:.0f} req/s ({config.load:g}x capacity), then
{config.phases[0].rate:.0f} req/s again, {config.high_share:.0%} of them
<code>X-Priority: high</code>, the rest <code>low</code>; clients give up after
{config.timeout_s:.3g} s. The two runs differ only in the SLO file's
<code>shedding:</code> section: off is <code>{{enabled: false, concurrency: {{mode: off}}}}</code>;
on is the default of a file that enforces: an adaptive concurrency limit (the
inner loop: it bounds the requests in flight, steered by the SLO's latency
targets; at the limit <code>low</code> is refused at once and <code>high</code> waits
a moment in a short queue) behind the SLO window (the outer loop).</p>
<ul>{summary}</ul>
<table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>
<p class="muted">high ok: answered 2xx within the timeout. high p95: over high-priority
requests, a request with no answer counted as the timeout (≥: the real p95 is at least
that). low shed: refused by SLOGuard (503; the reasons are in the summary). All
measured by the client; the limit, in flight and queued are sampled from the server
ten times a second.</p>
{"".join(charts)}
</body></html>
""",
        encoding="utf-8",
    )


def write_png(path: Path, config: DemoConfig, runs: Sequence[RunResult]) -> str | None:
    """Draw the charts with matplotlib; returns why not when it is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return "matplotlib is not installed: pip install 'sloguard[demo]'"
    figure = Figure(figsize=(10, 8), dpi=80, layout="constrained")
    axes = figure.subplots(3, len(runs), sharex=True, squeeze=False)
    top = max(config.timeout_s * 1000 * 1.2, config.targets_ms[1] * 3)
    shade = (config.phases[1].start_s, config.phases[2].end_s)
    for column, run in enumerate(runs):
        series = run.series(config)
        times = [p.t_s for p in series]
        latency, shed, limit = axes[0][column], axes[1][column], axes[2][column]
        for ax in (latency, shed, limit):
            ax.axvspan(*shade, color="#f3f4f6", zorder=0)
            ax.grid(True, color="#e5e7eb")
        nan = float("nan")
        # Markers: a bin with no request of a kind is a gap, and a lone point still shows.
        dots = {"marker": ".", "markersize": 4}
        high = [nan if p.high_p95_ms is None else p.high_p95_ms for p in series]
        low = [nan if p.low_p95_ms is None else p.low_p95_ms for p in series]
        latency.plot(times, high, color=HIGH, label="high", **dots)
        latency.plot(times, low, color=LOW, label="low (admitted)", **dots)
        latency.axhline(config.targets_ms[1], color=TARGET, linestyle="--", label="p95 target")
        latency.set_yscale("log")
        latency.set_ylim(5, top)
        latency.set_ylabel("p95 latency (ms)\nno answer = the timeout")
        latency.set_title(f"shedding {'on' if run.shedding else 'off'}")
        latency.legend(loc="upper left", fontsize=8)
        shed.plot(
            times,
            [nan if p.low_shed_ratio is None else p.low_shed_ratio * 100 for p in series],
            color=SHED,
        )
        shed.set_ylim(-2, 102)
        shed.set_ylabel("low-priority shed (%)")
        if run.limits:
            at = [s.t_s for s in run.limits]
            limit.plot(at, [s.limit for s in run.limits], color=TARGET, label="limit")
            limit.plot(at, [s.inflight for s in run.limits], color=INFLIGHT, label="in flight")
            limit.plot(
                at, [s.queued for s in run.limits], color=HIGH, linestyle="--", label="queued"
            )
            slots = "worker slots (unknown to it)"
            limit.axhline(config.capacity, color="#6b7280", linestyle=":", label=slots)
            limit.legend(loc="upper left", fontsize=8)
        else:
            limit.text(0.5, 0.5, "no concurrency limit", ha="center", transform=limit.transAxes)
        limit.set_ylabel("requests")
        limit.set_xlabel("seconds (grey: the overload)")
    figure.suptitle(f"sloguard demo: {CAPABILITY} at {config.load:g}x capacity")
    figure.savefig(path)
    return None
