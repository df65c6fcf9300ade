"""Figures for the worker registry and the health loop under attack and faults.

    python benchmarks/registry_faults.py            # this tree
    PYTHONPATH=OLD/src python benchmarks/registry_faults.py   # another tree's sloguard

1. Registry writes without the credential, against a real ``sloguard serve``:
   new ids, moving a registered worker's id to the attacker's URL, static ids,
   heartbeats, deletions, internal URLs, with no token and with wrong ones.
   Counts refused (4xx) and accepted (2xx), and whether the victim still routes
   to its own URL. Then, with the token: hijacks, bad URLs and a flood of 1,400
   ids (the bound).
2. Faults injected into the health loop: checks that raise (an unusable URL,
   a transport that raises, a registry whose bookkeeping raises), round after
   round. Counts faults injected and rounds the loop survived, and whether the
   healthy worker was still checked.

Runs the same on an older tree (``PYTHONPATH``), so that before and after can be
compared: only what both have is used (the CLI, ``HealthChecker.check_once``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from servers import free_port

CAP = "convert:document_to_pdf"


@contextlib.contextmanager
def serve(state: Path, *args: str) -> Iterator[str]:
    port = free_port()
    code = "import sys; from sloguard.cli import main; raise SystemExit(main(sys.argv[1:]))"
    env = {**os.environ, "SLOGUARD_REGISTRY_TOKEN": "", "SLOGUARD_API_TOKEN": ""}
    command = [sys.executable, "-c", code, "serve", "--state", str(state), "--port", str(port)]
    process = subprocess.Popen([*command, *args], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                httpx.get(url + "/healthz", timeout=1)
                break
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr is not None:
            process.stderr.close()


def registry_writes() -> None:
    with tempfile.TemporaryDirectory() as directory:
        state = Path(directory)
        (state / "workers.yml").write_text(
            f"workers:\n  - {{id: static-1, url: 'http://127.0.0.1:9', capabilities: [{CAP}]}}\n"
        )
        with serve(state) as url, httpx.Client(base_url=url, timeout=10) as client:
            token_file = state / "registry.token"
            token = token_file.read_text().strip() if token_file.exists() else None
            auth = {"authorization": f"Bearer {token}"} if token else {}
            victim = {"id": "victim", "url": "http://127.0.0.1:9001", "capabilities": [CAP]}
            client.post("/workers", json=victim, headers=auth).raise_for_status()

            outcomes: Counter[str] = Counter()
            attacker = "http://127.0.0.1:6666"
            internal = ["http://169.254.169.254", "http://127.0.0.1:6379", "http://10.0.0.1:22"]
            for headers in ({}, {"authorization": "Bearer guess"}, {"authorization": "Basic x"}):
                attempts = [("POST", "/workers", {**victim, "url": attacker})]  # hijack
                attempts += [("POST", "/workers", {**victim, "id": "static-1", "url": attacker})]
                attempts += [
                    (
                        "POST",
                        "/workers",
                        {"id": f"junk-{i}", "url": attacker, "capabilities": [CAP]},
                    )
                    for i in range(30)
                ]
                attempts += [
                    ("POST", "/workers", {"id": f"ssrf-{i}", "url": u, "capabilities": [CAP]})
                    for i, u in enumerate(internal)
                ]
                attempts += [("POST", "/workers/victim/heartbeat", None)]
                attempts += [
                    ("DELETE", "/workers/victim", None),
                    ("DELETE", "/workers/static-1", None),
                ]
                for method, path, body in attempts:
                    answer = client.request(method, path, json=body, headers=headers)
                    outcomes["refused" if 400 <= answer.status_code < 500 else "accepted"] += 1
            listed = {w["id"]: w["url"] for w in client.get("/workers").json()["workers"]}
            print(
                f"registry writes without the credential: {sum(outcomes.values())} tried, "
                f"{outcomes['refused']} refused, {outcomes['accepted']} accepted; "
                f"victim at {listed.get('victim')}, static-1 at {listed.get('static-1')}, "
                f"{len(listed)} workers listed"
            )
            if not token:
                return
            statuses: Counter[int] = Counter()
            hijack = client.post("/workers", json={**victim, "url": attacker}, headers=auth)
            bad = ["http://127.0.0.1:99999", "http://127.0.0.1:0", "http://u:p@127.0.0.1:1"]
            bad += ["http://127.0.0.1:1/?q", "ftp://127.0.0.1", "http://2130706433"]
            for i, bad_url in enumerate(bad):
                spec = {"id": f"bad-{i}", "url": bad_url, "capabilities": [CAP]}
                statuses[client.post("/workers", json=spec, headers=auth).status_code] += 1
            flood: Counter[int] = Counter()
            for i in range(1_400):
                spec = {"id": f"flood-{i}", "url": attacker, "capabilities": [CAP]}
                flood[client.post("/workers", json=spec, headers=auth).status_code] += 1
            print(
                f"with the credential: hijack -> {hijack.status_code}; {len(bad)} bad URLs -> "
                f"{dict(statuses)}; 1,400 new ids -> {dict(sorted(flood.items()))}"
            )


class RaisingTransport(httpx.AsyncBaseTransport):
    def __init__(self, faulty: str) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.faulty = faulty

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if str(request.url).startswith(self.faulty):
            raise RuntimeError("the transport broke (injected)")
        return await self.real.handle_async_request(request)


async def health_faults(rounds: int) -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from sloguard.routing import HealthChecker, Worker, WorkerRegistry

    class BrokenBookkeeping(WorkerRegistry):
        def check_passed(self, worker: Worker) -> None:
            if worker.id == "bookkeeping":
                raise ValueError("bookkeeping broke (injected)")
            super().check_passed(worker)

    import uvicorn

    async def health(request: Any) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Route("/health", health)]), port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    for _ in range(1_000):
        if server.started:
            break
        await asyncio.sleep(0.01)
    good = f"http://127.0.0.1:{port}"
    raising = f"http://127.0.0.1:{free_port()}"
    registry = BrokenBookkeeping()
    registry.register("good", good, [CAP], static=True)
    registry.register("raising", raising, [CAP], static=True)
    registry.register("bookkeeping", good, [CAP], static=True)
    try:
        registry.register("bad-url", "http://127.0.0.1:99999", [CAP], static=True)
    except ValueError:  # refused at registration by now: put it there as an older one would
        registry._workers["bad-url"] = Worker("bad-url", "http://127.0.0.1:99999", frozenset([CAP]))
    checker = HealthChecker(registry, unhealthy_after=1)
    logging.getLogger("sloguard").setLevel(logging.CRITICAL)  # each fault is logged once
    injected = survived = good_checked = 0
    async with httpx.AsyncClient(transport=RaisingTransport(raising)) as client:
        for _ in range(rounds):
            injected += 3  # bad-url, raising, bookkeeping: each check raises
            registry.unreachable(registry.get("good"), "reset before the round")  # type: ignore[arg-type]
            try:
                await checker.check_once(client)
            except Exception as exc:
                print(f"  the round raised {type(exc).__name__}: {str(exc)[:80]}")
                break
            survived += 1
            good_checked += registry.get("good").checks_ok  # type: ignore[union-attr]
    liveness = getattr(checker, "liveness", None)
    print(
        f"health loop: {injected} faults injected over {rounds} rounds, {survived} rounds "
        f"survived, the healthy worker checked in {good_checked}"
        + (f"; liveness failures {liveness.failures}" if liveness is not None else "")
    )
    server.should_exit = True
    await serving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    import sloguard

    print(f"sloguard from {Path(sloguard.__file__).parent}")
    registry_writes()
    asyncio.run(health_faults(args.rounds))


if __name__ == "__main__":
    main()
