"""Idempotency keys: execute each keyed request at most once, replay its response."""

from sloguard.idempotency.keys import parse_idempotency_key
from sloguard.idempotency.memory import MemoryStore
from sloguard.idempotency.middleware import IdempotencyMiddleware, Principal
from sloguard.idempotency.store import Claim, ClaimStatus, Store, StoredResponse

__all__ = [
    "Claim",
    "ClaimStatus",
    "IdempotencyMiddleware",
    "MemoryStore",
    "Principal",
    "Store",
    "StoredResponse",
    "parse_idempotency_key",
]
