"""The client half: httpx transports for calling a sloguard-protected service.

Needs httpx: ``pip install 'sloguard[client]'``.
"""

try:
    import httpx as _httpx  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "sloguard.client needs httpx, which is not installed: pip install 'sloguard[client]'"
    ) from exc

from sloguard.client.policy import PRIORITIES, RetryPolicy
from sloguard.client.retries import RetryStats
from sloguard.exceptions import Throttled

__all__ = ["PRIORITIES", "RetryPolicy", "RetryStats", "Throttled"]
