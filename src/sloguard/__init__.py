"""sloguard: SLO-aware ASGI middleware.

Idempotency keys, per-capability SLOs and priority load shedding for any ASGI app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sloguard.exceptions import (
    ConfigurationError,
    InvalidIdempotencyKey,
    SLOFileError,
    SloguardError,
    StoreUnavailable,
)
from sloguard.idempotency import IdempotencyMiddleware, MemoryStore, Store
from sloguard.middleware import SLOGuard
from sloguard.slo import SLOFile, SLOManager, SLOStatus

if TYPE_CHECKING:
    from sloguard.idempotency.redis import RedisStore

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "IdempotencyMiddleware",
    "InvalidIdempotencyKey",
    "MemoryStore",
    "RedisStore",
    "SLOFile",
    "SLOFileError",
    "SLOGuard",
    "SLOManager",
    "SLOStatus",
    "SloguardError",
    "Store",
    "StoreUnavailable",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: redis-py is an optional extra (sloguard[redis]).
    if name == "RedisStore":
        from sloguard.idempotency.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
