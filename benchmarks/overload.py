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
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

from servers import CAPACITY, SERVICE_S, uvicorn_server


@dataclass(frozen=True, slots=True)
class Outcome:
    sent_at: float
    priority: str
    status: int  # 0: timed out or failed
    latency_s: float


async def post(host: str, port: int, priority: str) -> int:
    """One ``POST /work`` on a fresh connection; its status.

    A bare HTTP/1.1 exchange over asyncio streams: the generator must stay far
    cheaper than the server it loads (httpx's pool costs milliseconds a request
    with hundreds of connections open, and would be the bottleneck).
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"POST /work HTTP/1.1\r\nHost: {host}\r\nX-Priority: {priority}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\n"
            "Connection: close\r\n\r\n{}".encode()
        )
        await writer.drain()
        response = await reader.read()
        return int(response.split(b" ", 2)[1])
    finally:
        writer.close()


async def generate(
    url: str, rate: float, seconds: float, high_share: float, timeout_s: float
) -> list[Outcome]:
    """Send ``rate`` requests a second for ``seconds``, open loop: each at its due time,
    whatever happened to the ones before."""
    outcomes: list[Outcome] = []
    rng = random.Random(1)
    address = urlsplit(url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    start = time.monotonic()

    async def one(priority: str, due: float) -> None:
        status = 0
        try:
            async with asyncio.timeout(timeout_s):
                status = await post(host, port, priority)
        except (TimeoutError, OSError, ValueError, IndexError):
            pass
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
    return outcomes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summarize(name: str, outcomes: list[Outcome], warmup_s: float) -> None:
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
        f" {'low shed':>9} {'low ok':>8} {'timeouts':>9}"
    )
    for name, app in (("bare", "servers:limited"), ("SLOGuard", "servers:limited_guarded")):
        with uvicorn_server(app, quiet=True) as url:
            outcomes = asyncio.run(generate(url, rate, args.seconds, args.high_share, args.timeout))
        summarize(name, outcomes, args.warmup)
        summarize(f"{name} (all)", outcomes, 0.0)
    print("\ntarget with SLOGuard: high p95 <= 100 ms (its SLO) and high ok >= 99%")


if __name__ == "__main__":
    main()
