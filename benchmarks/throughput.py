"""Requests per second through a real server: SLOGuard's full stack vs the bare app.

    apt-get install wrk && pip install -e ".[bench]" && python benchmarks/throughput.py

Each app runs under uvicorn (one worker) in its own process; wrk drives it from
another. Rounds alternate between the apps, so machine noise hits them alike;
the table gives the median requests per second over the rounds and the ratio
to the bare app serving the same requests: "miss" rows send a fresh
Idempotency-Key with every request, and are compared with the bare app sent
those same requests (parsing the extra header is the server's cost, not the
middleware's). ``--breakdown`` adds IdempotencyMiddleware alone, with its
MemoryStore and with a store that keeps nothing, to show where a miss goes.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from servers import uvicorn_server

BODY = '{"document": "report.docx", "format": "pdf", "pages": 12}'

LUA = """
local counter = 0
function init(args)
  with_key = args[1] == "key"
  run = args[2]
end
function request()
  counter = counter + 1
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer bench"}
  if with_key then
    headers["Idempotency-Key"] = run .. "-" .. counter
  end
  return wrk.format("POST", "/items", headers, 'BODY')
end
""".replace("BODY", BODY)

BARE = "bare Starlette app"
BARE_KEYED = "bare Starlette app, keyed requests"
VARIANTS = [
    # (row, app, requests, the row it is compared with)
    (BARE, "servers:bare", "nokey", BARE),
    (BARE_KEYED, "servers:bare", "key", BARE_KEYED),
    ("SLOGuard full stack, no key", "servers:guarded", "nokey", BARE),
    ("SLOGuard full stack, miss", "servers:guarded", "key", BARE_KEYED),
    ("peer asgi-idempotency-header, miss", "servers:peer", "key", BARE_KEYED),
]
BREAKDOWN = [
    ("IdempotencyMiddleware, miss", "servers:idempotency", "key", BARE_KEYED),
    ("  the same, store keeping nothing", "servers:idempotency_forgetful", "key", BARE_KEYED),
]


def wrk(url: str, script: Path, mode: str, seconds: int, connections: int) -> float:
    """Requests per second that ``wrk`` drove through ``url`` (see :func:`wrk_run`)."""
    return wrk_run(url, script, mode, seconds, connections)[1]


def wrk_run(
    url: str, script: Path, mode: str, seconds: int, connections: int, timeout_s: int = 2
) -> tuple[int, float]:
    """Drive ``url`` with ``wrk`` for ``seconds``: the requests it completed, and per second.

    ``mode`` is "key" (a fresh Idempotency-Key on every request) or "nokey"; any
    error or non-2xx response stops the run.
    """
    # Each run's keys carry a prefix of their own: the warm-up's keys repeated in the
    # measured run would be replays, not misses.
    run = uuid.uuid4().hex[:12]
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout_s}s"]
    out = subprocess.run(
        [*command, "-s", str(script), url, "--", mode, run],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    done = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if done is None or rate is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return int(done.group(1)), float(rate.group(1))


def lua_script() -> Path:
    """The wrk script that sends :data:`BODY`, keyed or not (in a new temporary directory)."""
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(LUA, encoding="utf-8")
    return script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--breakdown", action="store_true", help="add IdempotencyMiddleware rows")
    args = parser.parse_args()
    variants = VARIANTS + BREAKDOWN if args.breakdown else VARIANTS
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    script = lua_script()
    results: dict[str, list[float]] = {name: [] for name, _, _, _ in variants}
    for _ in range(args.rounds):
        for name, app, mode, _ in variants:
            with uvicorn_server(app) as url:
                wrk(url, script, mode, 1, args.connections)  # warm-up
                results[name].append(wrk(url, script, mode, args.seconds, args.connections))
    medians = {name: statistics.median(values) for name, values in results.items()}
    width = max(len(name) for name, _, _, _ in variants)
    print(
        f"{'variant':<{width}}  {'median req/s':>12}  {'min':>8}  {'max':>8}  {'x bare':>6}"
        f"  {'µs/req added':>12}"
    )
    for name, _, _, baseline in variants:
        values, median, bare = results[name], medians[name], medians[baseline]
        print(
            f"{name:<{width}}  {median:12.0f}  {min(values):8.0f}  {max(values):8.0f}"
            f"  {median / bare:6.2f}  {1e6 / median - 1e6 / bare:12.1f}"
        )
    print(f"\nrounds: {args.rounds} x {args.seconds} s, {args.connections} connections, 1 thread")
    print("x bare: against the bare app sent the same requests (keyed or not)")
    print("µs/req added: the server's time per request beyond the bare app's, at saturation")
    print("target: full stack >= 0.90 x bare")


if __name__ == "__main__":
    main()
