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
import pytest

from sloguard.idempotency.keys import Fingerprinter
from sloguard.routing.server import FINGERPRINT_SECRET_ENV, ServeConfig
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


def auth(state: Path) -> dict[str, str]:
    """The header registry writes need: the token serve wrote to its state directory."""
    return {"authorization": f"Bearer {(state / 'registry.token').read_text().strip()}"}


def refusal(*args: str) -> tuple[int, list[str]]:
    process = sloguard(
        "serve", *args, env={"SLOGUARD_REGISTRY_TOKEN": "", "SLOGUARD_API_TOKEN": ""}
    )
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
        async with httpx.AsyncClient(headers=auth(tmp_path)) as client:
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
        httpx.Client(base_url=url, headers=auth(tmp_path)) as client,
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


def test_the_registry_options_of_serve(tmp_path: Path) -> None:
    hosts = ["--worker-hosts", "127.0.0.0/8", "--max-workers", "1"]
    env = {"SLOGUARD_REGISTRY_TOKEN": "from-env", "SLOGUARD_API_TOKEN": ""}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = sloguard("serve", "--state", str(tmp_path), "--port", str(port), *hosts, env=env)
    with stopped_at_exit(serve) as process, httpx.Client(base_url=url) as client:
        assert process.stderr is not None
        line = process.stderr.readline()
        wait_until_answering(url + "/healthz", process)
        auth = {"authorization": "Bearer from-env"}

        def join(worker_id: str, host: str) -> httpx.Response:
            spec = {"id": worker_id, "url": f"http://{host}:9001", "capabilities": [CAP]}
            return client.post("/workers", json=spec, headers=auth)

        without = client.post("/workers/w1/heartbeat")
        outside = join("w1", "10.0.0.1")
        first = join("w1", "127.0.0.1")
        second = join("w2", "127.0.0.2")

    assert "; registry token from $SLOGUARD_REGISTRY_TOKEN; API token off" in line
    assert not (tmp_path / "registry.token").exists()  # a token was given: no file
    assert without.status_code == 401
    assert (outside.status_code, outside.json()["error"]) == (403, "worker_host_not_allowed")
    assert first.status_code == 201
    assert (second.status_code, second.json()["error"]) == (409, "registry_full")


def test_an_open_registry_takes_writes_from_anyone(tmp_path: Path) -> None:
    with controller("--state", str(tmp_path), "--open-registry") as url:
        spec = {"id": "w1", "url": "http://127.0.0.1:9001", "capabilities": [CAP]}
        created = httpx.post(url + "/workers", json=spec)

    assert created.status_code == 201
    assert not (tmp_path / "registry.token").exists()


def test_bad_registry_options_are_refused_in_one_line(tmp_path: Path) -> None:
    port = str(free_port())
    token_file = tmp_path / "registry.token"
    token_file.write_text("s3cret\n")
    token_file.chmod(0o644)
    cases = [
        (["--open-registry", "--registry-token", "x"], 2, "--open-registry and --registry-token"),
        (["--worker-hosts", "10.0.0.0/8,not a host"], 2, "worker hosts: 'not a host' is not"),
        (["--max-workers", "0"], 2, "--max-workers: expected a whole number from 1, got '0'"),
        (["--state", str(tmp_path)], 1, f"{token_file} is readable by other users (mode 0644)"),
    ]
    for args, status, message in cases:
        got, lines = refusal("--port", port, *args)
        assert (got, len(lines)) == (status, 1), lines
        assert lines[0].startswith("sloguard serve: ")
        assert message in lines[0]


def test_serve_keys_its_digests_with_the_secret_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FINGERPRINT_SECRET_ENV, "deploy-1")
    guard = ServeConfig(state=str(tmp_path), open_registry=True)()
    keyed = Fingerprinter("deploy-1").principal("Bearer alice")

    assert guard.gate is not None
    assert guard.gate.fingerprints.principal("Bearer alice") == keyed
    assert guard.app.state.controller.fingerprints.principal("Bearer alice") == keyed
    assert keyed != Fingerprinter().principal("Bearer alice")
