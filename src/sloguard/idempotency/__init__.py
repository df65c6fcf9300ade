"""Idempotency keys: execute each keyed request at most once, replay its response."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sloguard.idempotency.gate import GateOptions, IdempotencyGate, Lease
from sloguard.idempotency.keys import Fingerprinter, parse_idempotency_key
from sloguard.idempotency.memory import MemoryStore
from sloguard.idempotency.middleware import IdempotencyMiddleware, Principal
from sloguard.idempotency.store import Claim, ClaimStatus, Store, StoredResponse, SyncStore

if TYPE_CHECKING:
    from sloguard.idempotency.redis import RedisStore

__all__ = [
    "Claim",
    "ClaimStatus",
    "Fingerprinter",
    "GateOptions",
    "IdempotencyGate",
    "IdempotencyMiddleware",
    "Lease",
    "MemoryStore",
    "Principal",
    "RedisStore",
    "Store",
    "StoredResponse",
    "SyncStore",
    "parse_idempotency_key",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: redis-py is an optional extra (sloguard[redis]).
    if name == "RedisStore":
        from sloguard.idempotency.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
