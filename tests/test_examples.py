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


async def test_the_quickstart_sheds_low_priority_when_its_slo_is_missed(server_url: str) -> None:
    slow = "/route/classify/email?delay_ms=100"  # its SLO: p95 60 ms
    async with httpx.AsyncClient(base_url=server_url) as client:
        warmup = [client.post(slow, headers={"X-Priority": "high"}) for _ in range(25)]
        assert {r.status_code for r in await asyncio.gather(*warmup)} == {200}
        # The policy re-reads the window once a second; poll until it has.
        shed = None
        for _ in range(60):
            response = await client.post(slow, headers={"X-Priority": "low"})
            if response.status_code == 503:
                shed = response
                break
        assert shed is not None, "no low-priority request was shed"
        high = await client.post(slow, headers={"X-Priority": "high"})

    assert shed.headers["retry-after"] == "2"  # classify_email.yml: shedding.retry_after_s
    problem = shed.json()
    assert problem["error"] == "slo_violation"
    assert problem["capability"] == "classify:email"
    assert any(v.startswith("p95 latency") for v in problem["violations"])
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
