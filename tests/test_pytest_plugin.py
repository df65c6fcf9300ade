"""The pytest plugin, in pytest sessions of its own (pytester): recording SLOGuard's
requests and marked tests, writing the metrics file, enforcing SLOs, under xdist too."""

from __future__ import annotations

import importlib.util
import json

import pytest

from sloguard.gate import read_metrics_file
from tests.redis_server import in_ci

SLO = """\
capability: {verb: convert, name: pdf}
slo:
  latency: {p50_ms: 50, p95_ms: 100, p99_ms: 200}
  availability: {target: 0.9}
"""

# A SLOGuard app whose handler takes ``?s=`` seconds by a manual clock, so latencies
# are exact; ``?status=`` sets the answer's status.
APP = """
import asyncio

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sloguard import SLOGuard
from sloguard._clock import ManualClock

clock = ManualClock()


async def work(request):
    clock.advance(float(request.query_params.get("s", "0.01")))
    return PlainTextResponse("done", status_code=int(request.query_params.get("status", "200")))


app = SLOGuard(
    Starlette(routes=[Route("/route/{verb}/{name}", work, methods=["POST"])]),
    clock=clock,
    metrics=False,
    idempotency=False,
)


def send(count, seconds, status=200, path="/route/convert/pdf"):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for _ in range(count):
                await client.post(path, params={"s": seconds, "status": status})

    asyncio.run(go())
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(guarded_app=APP)
    (pytester.path / "slos").mkdir()
    (pytester.path / "slos" / "pdf.yml").write_text(SLO, encoding="utf-8")
    pytester.syspathinsert()
    return pytester


def metrics(pytester: pytest.Pytester, name: str = "out.json") -> dict[str, dict[str, float]]:
    loaded: dict[str, dict[str, float]] = json.loads((pytester.path / name).read_text())
    return loaded


OUTCOMES = """
import pytest

def test_passes():
    pass

def test_fails():
    assert False

@pytest.mark.skip(reason="no")
def test_skipped():
    pass

@pytest.mark.xfail(strict=True)
def test_xfails():
    assert False

@pytest.mark.capability("convert:pdf")
def test_marked():
    from guarded_app import send
    send(3, 0.5, status=500)
"""


def test_without_its_options_no_outcome_changes_and_nothing_is_written(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(test_outcomes=OUTCOMES)
    # Separate processes: a plugin module imported in this one cannot be blocked.
    with_plugin = project.runpytest_subprocess("--strict-markers")
    without = project.runpytest_subprocess("--strict-markers", "-p", "no:sloguard")
    unmarked = project.runpytest_subprocess("-p", "no:sloguard")

    with_plugin.assert_outcomes(passed=2, failed=1, skipped=1, xfailed=1)
    unmarked.assert_outcomes(passed=2, failed=1, skipped=1, xfailed=1)
    assert with_plugin.ret == unmarked.ret == pytest.ExitCode.TESTS_FAILED
    assert "sloguard:" not in with_plugin.stdout.str()
    assert "sloguard SLO check" not in with_plugin.stdout.str()
    assert sorted(p.name for p in project.path.iterdir() if p.suffix == ".json") == []
    # Without the plugin the marker is unknown, so --strict-markers refuses the file.
    assert without.ret == pytest.ExitCode.INTERRUPTED
    assert "'capability' not found in `markers` configuration option" in without.stdout.str()


def test_metrics_output_records_every_request_and_the_session_passes(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_requests="""
        from guarded_app import send

        def test_fast():
            send(24, 0.02)

        def test_one_slow_one_failing():
            send(1, 0.1875)
            send(1, 0.02, status=503)
            send(2, 0.02, path="/route/no/slo")
        """
    )
    result = project.runpytest("--metrics-output", "out.json", "--slo-dir", "slos", "--slo-enforce")

    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    written = metrics(project)
    pdf = written["convert:pdf"]
    assert pdf["requests"] == 26
    assert pdf["errors"] == 1
    assert pdf["availability"] == pytest.approx(25 / 26)
    assert pdf["p50_ms"] == pytest.approx(20)
    assert pdf["p99_ms"] == pytest.approx(187.5)  # nearest rank: the slowest of 26
    assert written["no:slo"]["requests"] == 2
    out = result.stdout.str()
    assert "sloguard: measurements written to out.json" in out
    assert "sloguard SLO check" in out
    assert "1 ok, 1 unchecked: PASS" in out


def test_slo_enforce_fails_the_session_with_a_summary(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_slow="""
        from guarded_app import send

        def test_slow():
            send(25, 0.3)
        """
    )
    enforced = project.runpytest("--slo-dir", "slos", "--slo-enforce")
    reported = project.runpytest("--slo-dir", "slos")

    enforced.assert_outcomes(passed=1)  # the test passed; the session fails on the SLO
    assert enforced.ret == pytest.ExitCode.TESTS_FAILED
    enforced.stdout.fnmatch_lines(
        [
            "*sloguard SLO check FAILED (--slo-enforce)*",
            "convert:pdf *25 *300.0/50 *300.0/100 *300.0/200 *100.00%/90% *VIOLATED",
            "  convert:pdf: p50 latency 300ms > target 50ms",
            "1 violated: FAIL",
        ]
    )
    assert reported.ret == pytest.ExitCode.OK  # reported, not enforced
    assert "1 violated: FAIL" in reported.stdout.str()
    assert not (project.path / "out.json").exists()


def test_marked_tests_are_timed_as_one_request_each(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_marked="""
        import pytest

        @pytest.mark.capability("summarize:text")
        def test_ok():
            pass

        @pytest.mark.slo("summarize:text")  # the seed's name for the marker
        def test_broken():
            assert False

        @pytest.mark.capability("summarize:text")
        def test_skipped():
            pytest.skip("not counted")

        def test_unmarked():
            pass
        """
    )
    result = project.runpytest("--strict-markers", "--metrics-output", "results/metrics.yml")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    written = read_metrics_file(project.path / "results" / "metrics.yml")
    assert list(written) == ["summarize:text"]
    assert written["summarize:text"].requests == 2
    assert written["summarize:text"].errors == 1


def test_requests_served_by_uvicorn_on_another_thread_are_recorded(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_served="""
        import httpx
        from guarded_app import app
        from tests.servers import serving

        def test_over_http():
            with serving(app) as url:
                for _ in range(5):
                    assert httpx.post(url + "/route/convert/pdf?s=0.125").status_code == 200
        """
    )
    result = project.runpytest("--metrics-output", "out.json")
    result.assert_outcomes(passed=1)
    assert metrics(project)["convert:pdf"]["requests"] == 5
    assert metrics(project)["convert:pdf"]["p95_ms"] == pytest.approx(125)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slo-enforce"], "--slo-enforce needs --slo-dir DIR"),
        (["--slo-dir", "missing"], "--slo-dir: SLO directory not found: missing"),
        (["--slo-dir", "bad"], "bad.yml: slo.latency.p95_ms: "),
        (["--metrics-output", "o.json", "--slo-min-requests", "0"], "must be at least 1"),
    ],
)
def test_bad_options_are_usage_errors(
    project: pytest.Pytester, args: list[str], message: str
) -> None:
    (project.path / "bad").mkdir()
    (project.path / "bad" / "bad.yml").write_text(SLO.replace("p95_ms: 100", "p95_ms: x"))
    project.makepyfile(test_nothing="def test_nothing(): pass")
    result = project.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_a_marker_without_one_capability_is_a_usage_error(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_bad_marker="""
        import pytest

        @pytest.mark.capability("not a capability")
        def test_it():
            pass
        """
    )
    result = project.runpytest("--metrics-output", "out.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "test_bad_marker.py::test_it: capability('not a capability')" in result.stderr.str()
    assert project.runpytest().ret == pytest.ExitCode.OK  # without the options: untouched


def test_xdist_workers_records_are_merged(project: pytest.Pytester) -> None:
    if importlib.util.find_spec("xdist") is None:
        reason = "pytest-xdist is not installed (it is in the dev extra)"
        if in_ci():
            pytest.fail(f"{reason}; CI is set, so the xdist test must run", pytrace=False)
        pytest.skip(reason)
    for index in range(4):
        project.makepyfile(
            **{
                f"test_part{index}": f"""
                from guarded_app import send

                def test_part():
                    send(10, {0.01 * (index + 1)})
                """
            }
        )
    result = project.runpytest_subprocess(
        "-n", "2", "--metrics-output", "out.json", "--slo-dir", "slos", "--slo-enforce"
    )
    result.assert_outcomes(passed=4)
    assert result.ret == pytest.ExitCode.OK
    pdf = metrics(project)["convert:pdf"]
    assert pdf["requests"] == 40  # four files' requests, whichever worker ran them
    assert pdf["p99_ms"] == pytest.approx(40)
    assert pdf["p50_ms"] == pytest.approx(20)
    assert "1 ok: PASS" in result.stdout.str()
