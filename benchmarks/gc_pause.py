"""How long a full garbage collection takes with a full MemoryStore.

    pip install -e . && python benchmarks/gc_pause.py

A full collection walks every object the collector tracks, and pauses every
request in flight while it does. The store keeps each response as a plain tuple
of plain values, which the collector stops tracking once it has seen it.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from sloguard import MemoryStore
from sloguard.idempotency import StoredResponse

HEADERS = ((b"content-length", b"14"), (b"content-type", b"application/json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=100_000)
    args = parser.parse_args()
    gc.collect()
    before = len(gc.get_objects())
    store = MemoryStore(max_entries=args.responses)
    fingerprint = b"r0:" + b'{"document": "report.docx"}'
    for i in range(args.responses):
        key = f"12:Bearer bench\x1fPOST\x1f6:/items\x1fkey-{i}"
        claim = store.claim_nowait(key, fingerprint, 60)
        response = StoredResponse(fingerprint, 201, HEADERS, b'{"id":1,"a":1}')
        store.complete_nowait(key, claim.token, response)
    gc.collect()
    pauses = []
    for _ in range(5):
        start = time.perf_counter()
        gc.collect()
        pauses.append(time.perf_counter() - start)
    tracked = len(gc.get_objects()) - before
    print(f"stored responses:               {len(store):>9,}")
    print(f"objects tracked beyond the start: {tracked:>7,}")
    print(f"full collection, median of 5:   {statistics.median(pauses) * 1e3:9.1f} ms")


if __name__ == "__main__":
    main()
