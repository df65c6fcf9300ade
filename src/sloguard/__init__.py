"""sloguard: SLO-aware ASGI middleware.

Idempotency keys, per-capability SLOs and priority load shedding for any ASGI app.
"""

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

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "IdempotencyMiddleware",
    "InvalidIdempotencyKey",
    "MemoryStore",
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
