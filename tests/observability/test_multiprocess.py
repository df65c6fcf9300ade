"""Prometheus multiprocess mode: several uvicorn workers, one /metrics that adds them up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port

APP = """
from pathlib import Path
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from sloguard import SLOGuard
from sloguard.observability.metrics import metrics_app

async def work(request):
    return PlainTextResponse(str(__import__("os").getpid()))

guarded = SLOGuard(
    Starlette(routes=[Route("/work", work, methods=["POST"])]),
    slo_dir=Path(__file__).parent / "slos",
    route_table={"/work": "convert:pdf"},
)
app = Starlette(routes=[Mount("/metrics", metrics_app()), Mount("/", guarded)])
"""

SLO = """\
capability: {verb: convert, name: pdf}
slo:
  latency: {p50_ms: 50, p95_ms: 100, p99_ms: 200}
  availability: {target: 0.99}
"""


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "slos").mkdir()
    (tmp_path / "slos" / "pdf.yml").write_text(SLO, encoding="utf-8")
    (tmp_path / "mp_app.py").write_text(APP, encoding="utf-8")
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(tmp_path)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "mp_app:app",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        cwd=tmp_path,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/metrics/", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, "uvicorn exited"
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(20)


def test_metrics_add_up_across_worker_processes(two_workers: str) -> None:
    pids = set()
    sent = 0
    with httpx.Client(base_url=two_workers) as client:
        # New connections spread over the workers; stop once both have answered.
        while len(pids) < 2 or sent < 40:
            with httpx.Client(base_url=two_workers) as fresh:
                pids.add(fresh.post("/work").text)
            sent += 1
            assert sent < 2000, "one worker never answered"
        text = client.get("/metrics/").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sloguard_requests_total":
                assert sample.labels["capability"] == "convert:pdf"
                total += sample.value
    assert len(pids) == 2
    assert total == sent
