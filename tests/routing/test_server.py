"""``sloguard serve`` as real processes: several sharing one Redis, several on one port,
and the one-line refusals."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.redis_server import RedisKeys
from tests.routing.workers import RecordingWorker, running
from tests.servers import free_port
from tests.test_cli import sloguard, stopped_at_exit, wait_until_answering

CAP = "convert:document_to_pdf"


@contextlib.contextmanager
def controller(*args: str) -> Iterator[str]:
    port = free_port()
    with stopped_at_exit(sloguard("serve", "--port", str(port), *args)) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until_answering(url + "/healthz", process)
        yield url


def refusal(*args: str) -> tuple[int, list[str]]:
    process = sloguard("serve", *args)
    _, err = process.communicate(timeout=60)
    return process.returncode, err.splitlines()


async def test_two_controllers_share_one_redis_registry(
    tmp_path: Path, redis_keys: RedisKeys
) -> None:
    shared = ["--state", str(tmp_path), "--redis", redis_keys.url]
    shared += ["--redis-prefix", redis_keys.prefix, "--heartbeat-ttl-s", "30"]
    worker = RecordingWorker("w1")
    path = "/route/convert/document_to_pdf"
    with (
        running(worker) as worker_url,
        controller(*shared) as one,
        controller(*shared) as other,
    ):
        async with httpx.AsyncClient() as client:
            spec = {"id": "w1", "url": worker_url, "capabilities": [CAP]}
            registered = await client.post(one + "/workers", json=spec)
            routed = await client.post(other + path, content=b"{}")
            await redis_keys.travel(30)  # no heartbeat came: the registration expires
            listed = [
                (await client.get(url + "/workers")).json()["workers"] for url in (one, other)
            ]
            after = [await client.post(url + path) for url in (one, other)]

    assert registered.status_code == 201
    assert routed.status_code == 200
    assert routed.headers["x-worker-id"] == "w1"
    assert len(worker.received) == 1
    assert listed == [[], []]
    assert [r.status_code for r in after] == [404, 404]


def test_two_processes_answer_on_one_port_and_share_idempotency(
    tmp_path: Path, redis_keys: RedisKeys
) -> None:
    (tmp_path / "workers.yml").write_text("workers: []\n")
    args = ["--state", str(tmp_path), "--processes", "2", "--redis", redis_keys.url]
    worker = RecordingWorker("w1")
    with (
        running(worker) as worker_url,
        controller(*args, "--redis-prefix", redis_keys.prefix) as url,
        httpx.Client(base_url=url) as client,
    ):
        spec = {"id": "w1", "url": worker_url, "capabilities": [CAP]}
        assert client.post("/workers", json=spec).status_code == 201
        answers = []
        for _ in range(6):  # new connections, so that both processes take some
            with httpx.Client(base_url=url) as fresh:
                key = {"Idempotency-Key": "same"}
                answers.append(fresh.post("/route/convert/document_to_pdf", headers=key))
        metrics = client.get("/metrics/").text

    assert {r.status_code for r in answers} == {200}
    assert [r.headers.get("idempotent-replayed") for r in answers] == [None] + ["true"] * 5
    assert len(worker.received) == 1
    assert "sloguard_" in metrics


def test_several_processes_without_redis_are_refused_in_one_line() -> None:
    status, lines = refusal("--processes", "2", "--port", str(free_port()))
    assert status == 2
    assert lines == [
        "sloguard serve: --processes 2 needs --redis URL: idempotency keys and the worker "
        "registry must be shared between the processes"
    ]


def test_a_busy_port_and_a_bad_port_are_one_line_each() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        busy_status, busy = refusal("--port", str(port))
    bad_status, bad = refusal("--port", "70000")

    assert (busy_status, busy) == (
        2,
        [f"sloguard serve: cannot listen on 127.0.0.1:{port}: address already in use"],
    )
    assert (bad_status, bad) == (
        2,
        ["sloguard serve: --port: expected a number from 0 to 65535, got '70000'"],
    )


def test_port_0_prints_the_port_actually_bound_and_access_log_logs_requests(
    tmp_path: Path,
) -> None:
    code = "import sys; from sloguard.cli import main; raise SystemExit(main(sys.argv[1:]))"
    args = ("serve", "--state", str(tmp_path), "--port", "0", "--access-log")
    command = [sys.executable, "-c", code, *args]
    with stopped_at_exit(
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ) as process:
        assert process.stderr is not None
        line = process.stderr.readline()
        url = line.split("listening on ")[1].split()[0]
        wait_until_answering(url + "/healthz", process)
        health = httpx.get(url + "/healthz")
        process.terminate()
        access_log, _ = process.communicate(timeout=30)

    assert not url.endswith(":0")
    assert health.json()["status"] == "ok"
    assert '"GET /healthz HTTP/1.1" 200' in access_log  # uvicorn's access log: stdout
