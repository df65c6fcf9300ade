"""Measurements from a Prometheus text exposition: PromQL's histogram_quantile, label
merging, bad input, and a real scrape of the /route controller judged by sloguard check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import pytest

from sloguard.cli import main
from sloguard.exceptions import MetricsFileError
from sloguard.gate import histogram_quantile, parse_exposition
from sloguard.routing import demo_worker_app
from tests.servers import free_port, serving
from tests.test_cli import sloguard, stopped_at_exit, wait_until_answering

INF = math.inf
HERE = Path("scrape.prom")


def test_histogram_quantile_interpolates_inside_the_bucket_like_promql() -> None:
    # 10 requests <= 0.1 s, 10 more <= 0.2 s, none slower.
    buckets = [(0.1, 10.0), (0.2, 20.0), (0.5, 20.0), (INF, 20.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)  # rank 10: top of bucket 1
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)  # from 0 in the first
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.19)  # 0.1 + 0.1 * 9/10
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.198)


def test_a_rank_in_the_inf_bucket_gives_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.99, [(0.1, 50.0), (0.5, 90.0), (INF, 100.0)]) == 0.5


@pytest.mark.parametrize(
    "buckets",
    [[], [(INF, 3.0)], [(0.1, 0.0), (INF, 0.0)], [(0.1, 1.0), (0.2, 2.0)]],
    ids=["none", "only-inf", "empty", "no-inf"],
)
def test_histogram_quantile_of_nothing_is_none(buckets: list[tuple[float, float]]) -> None:
    assert histogram_quantile(0.5, buckets) is None


def test_a_count_that_falls_is_held_up_as_promql_does() -> None:
    # A scrape race can make a higher bucket read lower; treat it as the lower one's count.
    assert histogram_quantile(0.5, [(0.1, 10.0), (0.2, 8.0), (INF, 20.0)]) == pytest.approx(0.1)


def exposition(*series: str) -> str:
    return "\n".join(series) + "\n"


def duration(capability: str, counts: dict[str, int], extra: str = "") -> list[str]:
    labels = f'capability="{capability}"{extra}'
    return [
        f'sloguard_request_duration_seconds_bucket{{{labels},le="{le}"}} {count}'
        for le, count in counts.items()
    ]


def requests(capability: str, priority: str, outcome: str, count: int, extra: str = "") -> str:
    labels = f'capability="{capability}",outcome="{outcome}",priority="{priority}"{extra}'
    return f"sloguard_requests_total{{{labels}}} {count}"


def test_series_are_added_up_across_priorities_processes_and_duplicates() -> None:
    first = duration("a:b", {"0.1": 5, "0.2": 8, "+Inf": 10}, ',pid="1"')
    second = duration("a:b", {"0.1": 5, "0.2": 10, "+Inf": 10}, ',pid="2"')
    text = exposition(
        "# TYPE sloguard_request_duration_seconds histogram",
        *first,
        *second,
        "# TYPE sloguard_requests_total counter",
        requests("a:b", "low", "ok", 9),
        requests("a:b", "high", "ok", 8),
        requests("a:b", "high", "error", 2),
        requests("a:b", "high", "error", 1),  # the same series twice: both count
    )
    measured = parse_exposition(text, HERE)["a:b"]
    assert measured.requests == 20
    assert measured.errors == 3
    assert measured.availability == pytest.approx(17 / 20)
    # merged: 10 <= 0.1 s, 18 <= 0.2 s, 20 in all
    assert measured.p50_ms == pytest.approx(100.0)
    assert measured.p95_ms == pytest.approx(200.0)  # rank 19 lies in +Inf: highest bound
    assert measured.p99_ms == pytest.approx(200.0)


def test_capabilities_are_kept_apart() -> None:
    text = exposition(
        *duration("a:b", {"0.1": 4, "+Inf": 4}),
        *duration("c:d", {"0.1": 0, "1.0": 2, "+Inf": 2}),
        requests("a:b", "normal", "ok", 4),
        requests("c:d", "normal", "error", 2),
    )
    measured = parse_exposition(text, HERE)
    assert sorted(measured) == ["a:b", "c:d"]
    assert measured["a:b"].p50_ms == pytest.approx(50.0)
    assert measured["c:d"].p50_ms == pytest.approx(550.0)
    assert measured["c:d"].availability == 0.0


def test_the_other_label_is_not_a_capability() -> None:
    text = exposition(requests("a:b", "normal", "ok", 1), requests("other", "normal", "ok", 5))
    assert list(parse_exposition(text, HERE)) == ["a:b"]


def test_without_the_counter_the_histogram_counts_and_availability_is_unknown() -> None:
    measured = parse_exposition(exposition(*duration("a:b", {"0.1": 3, "+Inf": 4})), HERE)
    assert measured["a:b"].requests == 4
    assert measured["a:b"].availability is None


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("# HELP x y\n", "", "no sloguard_request_duration_seconds or sloguard_requests_total"),
        ('sloguard_requests_total{outcome="ok"} 1\n', "sloguard_requests_total", "capability"),
        (
            exposition(
                *duration("a:b", {"0.1": 1, "+Inf": 1}), *duration("a:b", {"+Inf": 1}, ',p="2"')
            ),
            "sloguard_request_duration_seconds_bucket{capability='a:b'}",
            "different bucket bounds",
        ),
        (
            exposition(*duration("a:b", {"0.1": 1, "0.2": 2})),
            "sloguard_request_duration_seconds_bucket{capability='a:b'}",
            "no +Inf bucket",
        ),
        ('sloguard_requests_total{capability="a:b" 1\n', "", "not a Prometheus text exposition"),
    ],
    ids=["no-series", "no-capability", "bounds", "no-inf", "syntax"],
)
def test_bad_expositions_are_refused_naming_the_file(text: str, field: str, message: str) -> None:
    with pytest.raises(MetricsFileError) as info:
        parse_exposition(text, HERE)
    assert info.value.path == HERE
    [(found_field, found_message)] = info.value.problems
    assert found_field == field
    assert message in found_message


# -- a real scrape of the controller -------------------------------------------------

SLO = """\
capability: {{verb: {verb}, name: {name}}}
slo:
  latency: {{p50_ms: {p50}, p95_ms: {p95}, p99_ms: {p99}}}
  availability: {{target: 0.99}}
"""


def write_slo(directory: Path, capability: str, p50: int, p95: int, p99: int) -> None:
    verb, name = capability.split(":")
    text = SLO.format(verb=verb, name=name, p50=p50, p95=p95, p99=p99)
    (directory / f"{verb}_{name}.yml").write_text(text, encoding="utf-8")


@pytest.fixture
def scrape(tmp_path: Path) -> Path:
    """A `sloguard serve` process with one worker for two capabilities and none for a
    third; after 20 requests of each, its /metrics saved to a file."""
    slos = tmp_path / "state" / "controller" / "slos"
    slos.mkdir(parents=True)
    write_slo(slos, "classify:email", 1000, 2000, 5000)  # generous: met on any machine
    write_slo(slos, "convert:pdf", 10, 20, 30)  # every request sleeps 40 ms: missed
    write_slo(slos, "summarize:text", 1000, 2000, 5000)  # no worker: every request fails
    worker = demo_worker_app(["classify:email", "convert:pdf"], worker_id="w1")
    with serving(worker) as worker_url:
        (tmp_path / "state" / "workers.yml").write_text(
            f"workers:\n  - id: w1\n    url: {worker_url}\n"
            "    capabilities: [classify:email, convert:pdf]\n",
            encoding="utf-8",
        )
        port = free_port()
        command = sloguard("serve", "--state", str(tmp_path / "state"), "--port", str(port))
        with stopped_at_exit(command) as process:
            base = f"http://127.0.0.1:{port}"
            wait_until_answering(base + "/healthz", process)
            with httpx.Client(base_url=base, timeout=30) as client:
                for i in range(20):
                    priority = {"X-Priority": "high" if i % 2 else "low"}
                    email = client.post("/route/classify/email?delay_ms=0", headers=priority)
                    pdf = client.post("/route/convert/pdf?delay_ms=40", content=b"{}")
                    text = client.post("/route/summarize/text", content=b"{}")
                    assert (email.status_code, pdf.status_code, text.status_code) == (
                        200,
                        200,
                        503,
                    )
                saved = tmp_path / "scrape.prom"
                saved.write_text(client.get("/metrics/").text, encoding="utf-8")
    return saved


def test_sloguard_check_judges_a_real_controller_scrape(
    scrape: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slos = tmp_path / "state" / "controller" / "slos"
    status = main(["check", "--slos", str(slos), "--metrics", str(scrape), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    verdicts = {entry["capability"]: entry for entry in report["capabilities"]}

    assert status == 1
    assert report["passed"] is False
    email, pdf, text = (
        verdicts["classify:email"],
        verdicts["convert:pdf"],
        verdicts["summarize:text"],
    )
    assert email["status"] == "ok"
    assert email["measured"]["requests"] == 20  # low and high priority series added up
    assert email["measured"]["availability"] == 1.0
    assert pdf["status"] == "violated"
    assert pdf["measured"]["requests"] == 20
    # Each request slept 40 ms in the worker; the scrape's p50 is interpolated inside the
    # histogram bucket that holds it, (25 ms, 50 ms] or a later one.
    assert pdf["measured"]["p50_ms"] >= 25
    assert "p50 latency" in pdf["violations"][0]
    assert text["status"] == "violated"
    assert text["measured"]["availability"] == 0.0
    assert text["violations"] == ["availability 0.00% < target 99.00%"]


def test_the_same_scrape_passes_against_the_slo_it_meets(
    scrape: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only_email = tmp_path / "only-email"
    only_email.mkdir()
    write_slo(only_email, "classify:email", 1000, 2000, 5000)
    status = main(["check", "--slos", str(only_email), "--metrics", str(scrape)])
    out = capsys.readouterr().out
    assert status == 0
    assert "1 ok, 2 unchecked: PASS" in out  # not capability="other" (/healthz, /metrics)
    assert "convert:pdf" in out
    assert "unchecked (no SLO file)" in out
