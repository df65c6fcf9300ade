"""The client half: httpx transports for calling a sloguard-protected service.

``httpx.AsyncClient(transport=RetryTransport())`` (or ``httpx.Client(transport=
SyncRetryTransport())``) retries connection errors, 409 in flight, 429 and
502/503/504 with jittered exponential backoff and ``Retry-After``, keeps the same
``Idempotency-Key`` on every retry of a POST or PATCH, and refuses locally
(:class:`Throttled`) when the server has been refusing most requests.

httpx is one of sloguard's own dependencies (the /route controller forwards
with it), so nothing extra needs installing.
"""

from sloguard.client.policy import RetryPolicy
from sloguard.client.retries import RetryStats
from sloguard.client.transport import PRIORITY_EXTENSION, RetryTransport, SyncRetryTransport
from sloguard.exceptions import Throttled
from sloguard.shedding.priority import PRIORITIES

__all__ = [
    "PRIORITIES",
    "PRIORITY_EXTENSION",
    "RetryPolicy",
    "RetryStats",
    "RetryTransport",
    "SyncRetryTransport",
    "Throttled",
]
