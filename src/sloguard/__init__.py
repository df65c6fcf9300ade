"""sloguard: SLO-aware ASGI middleware.

Idempotency keys, per-capability SLOs and priority load shedding for any ASGI app.
"""

from sloguard.exceptions import ConfigurationError, InvalidIdempotencyKey, SloguardError
from sloguard.idempotency import IdempotencyMiddleware, MemoryStore, Store

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "IdempotencyMiddleware",
    "InvalidIdempotencyKey",
    "MemoryStore",
    "SloguardError",
    "Store",
    "__version__",
]
