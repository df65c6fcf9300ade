"""The README's quick start, served by a real uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import runpy
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from sloguard.cli import main
from tests.servers import serving

QUICKSTART = Path(__file__).parent.parent / "examples" / "quickstart.py"


@pytest.fixture
def server_url() -> Iterator[str]:
    with serving(runpy.run_path(str(QUICKSTART))["app"]) as url:
        yield url


def test_the_quickstart_replays_a_retried_order_over_real_http(server_url: str) -> None:
    with httpx.Client(base_url=server_url) as client:
        key = {"Idempotency-Key": "order-1"}
        first = client.post("/orders", json={"item": "book"}, headers=key)
        retry = client.post("/orders", json={"item": "book"}, headers=key)
        other = client.post("/orders", json={"item": "pen"}, headers=key)
        unkeyed = client.post("/orders", json={"item": "book"})

    assert first.status_code == 201
    assert retry.status_code == 201
    assert retry.content == first.content
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert unkeyed.json()["id"] == first.json()["id"] + 1


async def test_the_quickstart_sheds_low_priority_beyond_the_concurrency_limit(
    server_url: str,
) -> None:
    # classify_email.yml enforces: a burst beyond its concurrency limit (10 to start)
    # gets 503 + Retry-After for low priority at once, while high is still answered.
    slow = "/route/classify/email?delay_ms=100"
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as client:
        burst = [client.post(slow, headers={"X-Priority": "low"}) for _ in range(60)]
        responses = await asyncio.gather(*burst)
        high = await client.post(slow, headers={"X-Priority": "high"})

    refused = [r for r in responses if r.status_code == 503]
    assert refused, "no low-priority request was shed"
    assert {r.status_code for r in responses} == {200, 503}
    problem = refused[0].json()
    assert problem["error"] == "concurrency_limit"
    assert problem["capability"] == "classify:email"
    assert int(refused[0].headers["retry-after"]) >= 1
    assert high.status_code == 200


SLO_GATE = Path(__file__).parent.parent / "examples" / "ci" / "slo-gate.yml"
STATE_SLOS = Path(__file__).parent.parent / "state" / "controller" / "slos"

# A project of the kind the workflow gates: an app behind SLOGuard, and its tests.
PROJECT_TEST = """
import asyncio

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sloguard import SLOGuard
from sloguard._clock import ManualClock

clock = ManualClock()


async def classify(request):
    clock.advance(float(request.query_params["s"]))
    return PlainTextResponse("spam")


app = SLOGuard(
    Starlette(routes=[Route("/route/classify/email", classify, methods=["POST"])]),
    clock=clock,
    metrics=False,
)


def test_classify(seconds):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for _ in range(25):
                await client.post("/route/classify/email", params={"s": seconds})

    asyncio.run(go())
"""


def workflow_commands() -> list[list[str]]:
    """The `pytest` and `sloguard` commands the workflow runs, split as a shell would."""
    workflow = yaml.safe_load(SLO_GATE.read_text(encoding="utf-8"))
    steps = workflow["jobs"]["slo-gate"]["steps"]
    commands = [shlex.split(step["run"]) for step in steps if "run" in step]
    return [c[: c.index("||")] if "||" in c else c for c in commands if c[0] != "pip"]


@pytest.mark.parametrize(("seconds", "status"), [("0.005", 0), ("0.25", 1)])
def test_the_ci_workflow_gates_a_project_on_its_slos(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], seconds: str, status: int
) -> None:
    shutil.copytree(STATE_SLOS, tmp_path / "state" / "controller" / "slos")
    (tmp_path / "test_project.py").write_text(
        PROJECT_TEST.replace("def test_classify(seconds)", f"def test_classify(seconds={seconds})"),
        encoding="utf-8",
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    run_tests, gate, report = workflow_commands()
    assert run_tests[0] == "pytest"
    assert gate[:2] == report[:2] == ["sloguard", "check"]

    tests = subprocess.run(
        [sys.executable, "-m", *run_tests, "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    with contextlib.chdir(tmp_path):
        gate_status = main(gate[1:])
        gate_out = capsys.readouterr().out
        report_status = main(report[1:])

    assert gate_status == report_status == status
    verdict = "ok" if status == 0 else "VIOLATED"
    assert any(
        line.startswith("classify:email") and line.endswith(verdict)
        for line in gate_out.splitlines()
    )
    junit = ET.parse(tmp_path / "test-results" / "slo.xml").getroot()
    failures = [
        case.get("name") for case in junit.iter("testcase") if case.find("failure") is not None
    ]
    assert failures == ([] if status == 0 else ["classify:email"])
    assert (tmp_path / "test-results" / "tests.xml").is_file()
