"""Overload: a capacity-limited service at 3x its capacity, with and without SLOGuard.

    pip install -e ".[bench]" && python benchmarks/overload.py

The service (benchmarks/servers.py: ``limited``) serves 4 requests at once,
25 ms each: 160 requests a second. Its SLO: p50 50 ms, p95 100 ms, p99 250 ms,
99% available, enforced, default shedding. An open-loop load generator (this
process) sends 3x that, 20% ``X-Priority: high`` and 80% ``low``, at a fixed
rate, to uvicorn in another process; a request not answered within the client
timeout counts as failed. Statistics leave out the first seconds (warm-up),
when the queue of the first overload is still draining; the "(all)" rows
include them.

A second table runs clients that retry against the SLOGuard server: a naive
loop retrying at once, and ``sloguard.client.RetryTransport`` (Retry-After,
backoff, adaptive throttling, retry budget), with the attempts per second that
reached the server.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass

import httpx

from servers import CAPACITY, SERVICE_S, uvicorn_server
from sloguard.client import RetryTransport, Throttled


@dataclass(frozen=True, slots=True)
class Outcome:
    sent_at: float
    priority: str
    status: int  # 0 ("no answer"): timed out, failed, or refused by the client's throttle
    latency_s: float


class StreamTransport(httpx.AsyncBaseTransport):
    """One HTTP/1.1 exchange per request on a fresh connection, over asyncio streams.

    The generator must stay far cheaper than the server it loads: httpx's own
    connection pool costs milliseconds a request with hundreds of connections
    open, and would be the bottleneck. Counts the attempts that reach the server.
    """

    def __init__(self) -> None:
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("read") or 30.0
        host, port = request.url.host, request.url.port or 80
        headers = "".join(
            f"{name}: {value}\r\n"
            for name, value in request.headers.items()
            if name.lower() not in ("host", "connection")
        )
        head = (
            f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\nHost: {host}\r\n"
            f"{headers}Connection: close\r\n\r\n"
        )
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
                self.sent += 1
                try:
                    writer.write(head.encode() + await request.aread())
                    await writer.drain()
                    raw = await reader.read()
                finally:
                    writer.close()
        except TimeoutError as exc:
            raise httpx.ReadTimeout("timed out", request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        head_bytes, _, body = raw.partition(b"\r\n\r\n")
        status_line, *lines = head_bytes.split(b"\r\n")
        fields = [tuple(line.split(b": ", 1)) for line in lines if b": " in line]
        return httpx.Response(int(status_line.split(b" ", 2)[1]), headers=fields, content=body)


CLIENTS = ("once", "naive", "sloguard")
"""How a logical request is made: one attempt; up to 4 attempts, retried at once on a
5xx, 429 or failure (a typical hand-written loop); or through RetryTransport."""


async def generate(
    url: str, rate: float, seconds: float, high_share: float, timeout_s: float, client: str
) -> tuple[list[Outcome], int]:
    """Send ``rate`` logical requests a second for ``seconds``, open loop: each at its due
    time, whatever happened to the ones before. Returns outcomes and attempts sent."""
    outcomes: list[Outcome] = []
    rng = random.Random(1)
    wire = StreamTransport()
    transport: httpx.AsyncBaseTransport = wire
    if client == "sloguard":
        transport = RetryTransport(wrapped=wire, max_attempts=4, deadline=4 * timeout_s)
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=timeout_s) as http:

        async def one(priority: str, due: float) -> None:
            status = 0
            for _ in range(4 if client == "naive" else 1):
                try:
                    response = await http.post(
                        "/work", content=b"{}", headers={"X-Priority": priority}
                    )
                    status = response.status_code
                except (httpx.HTTPError, Throttled):
                    status = 0
                if client != "naive" or (0 < status < 500 and status != 429):
                    break
            outcomes.append(Outcome(due - start, priority, status, time.monotonic() - due))

        tasks = []
        for i in range(int(rate * seconds)):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            priority = "high" if rng.random() < high_share else "low"
            tasks.append(asyncio.create_task(one(priority, due)))
        await asyncio.gather(*tasks)
    return outcomes, wire.sent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summarize(
    name: str, outcomes: list[Outcome], warmup_s: float, attempts_per_s: float | None = None
) -> None:
    steady = [o for o in outcomes if o.sent_at >= warmup_s]
    high = [o for o in steady if o.priority == "high"]
    low = [o for o in steady if o.priority == "low"]
    ok_high = [o.latency_s * 1000 for o in high if 200 <= o.status < 300]
    low_status = Counter(o.status for o in low)
    low_ok = sum(count for status, count in low_status.items() if 200 <= status < 300)
    timeouts = sum(1 for o in steady if o.status == 0)
    print(
        f"{name:<16} {len(ok_high) / len(high):>8.1%} {percentile(ok_high, 0.5):>7.0f}"
        f" {percentile(ok_high, 0.95):>7.0f} {percentile(ok_high, 0.99):>7.0f}"
        f" {low_status[503] / len(low):>9.1%} {low_ok / len(low):>8.1%}"
        f" {timeouts / len(steady):>9.1%}"
        + ("" if attempts_per_s is None else f" {attempts_per_s:>11.0f}")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--load", type=float, default=3.0, help="multiple of capacity")
    parser.add_argument("--high-share", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    args = parser.parse_args()
    capacity = CAPACITY / SERVICE_S
    rate = args.load * capacity
    print(
        f"capacity {capacity:.0f} req/s; offered {rate:.0f} req/s for {args.seconds:.0f} s "
        f"({args.high_share:.0%} high); client timeout {args.timeout:.1f} s; "
        f"first {args.warmup:.0f} s left out\n"
    )
    print(
        f"{'server':<16} {'high ok':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
        f" {'low shed':>9} {'low ok':>8} {'no answer':>9}"
    )
    for name, app in (("bare", "servers:limited"), ("SLOGuard", "servers:limited_guarded")):
        with uvicorn_server(app, quiet=True) as url:
            outcomes, _ = asyncio.run(
                generate(url, rate, args.seconds, args.high_share, args.timeout, "once")
            )
        summarize(name, outcomes, args.warmup)
        summarize(f"{name} (all)", outcomes, 0.0)
    print("\ntarget with SLOGuard: high p95 <= 100 ms (its SLO) and high ok >= 99%")

    print(
        "\nClients that retry, against SLOGuard (a logical request: up to 4 attempts;"
        f" {args.timeout:.0f} s timeout each):\n"
    )
    print(
        f"{'clients':<16} {'high ok':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
        f" {'low shed':>9} {'low ok':>8} {'no answer':>9} {'attempts/s':>11}"
    )
    for name, client in (("naive retries", "naive"), ("RetryTransport", "sloguard")):
        with uvicorn_server("servers:limited_guarded", quiet=True) as url:
            outcomes, sent = asyncio.run(
                generate(url, rate, args.seconds, args.high_share, args.timeout, client)
            )
        summarize(name, outcomes, args.warmup, attempts_per_s=sent / args.seconds)


if __name__ == "__main__":
    main()
