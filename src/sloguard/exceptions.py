"""Every exception sloguard raises, in one place."""

from __future__ import annotations

from pathlib import Path


class SloguardError(Exception):
    """Base class of sloguard's own errors."""


class ConfigurationError(SloguardError, ValueError):
    """An option or a configuration file is invalid."""


class InvalidIdempotencyKey(SloguardError, ValueError):
    """The ``Idempotency-Key`` header is not a valid key; answered with 400."""


class Throttled(SloguardError):
    """``sloguard.client`` refused a request locally, without sending it: the server has
    been refusing most requests lately (adaptive throttling). Retry later, or not at all.
    """

    def __init__(self, host: str, probability: float) -> None:
        self.host = host
        self.probability = probability
        super().__init__(
            f"request to {host} not sent: throttled locally because the server refused most "
            f"recent requests (local rejection probability {probability:.2f})"
        )

    def __reduce__(self) -> tuple[type[Throttled], tuple[str, float]]:
        return type(self), (self.host, self.probability)


class FileError(ConfigurationError):
    """A configuration or input file could not be used: unreadable, not parseable, or invalid.

    ``problems`` pairs a field path (``slo.latency.p95_ms``; empty when the file
    as a whole is at fault) with what is wrong there. ``str()`` gives one line per
    problem, each starting with the file's path.
    """

    def __init__(self, path: Path, problems: tuple[tuple[str, str], ...]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(_problem_line(str(path), f, m) for f, m in problems))

    def __reduce__(self) -> tuple[type[FileError], tuple[Path, tuple[tuple[str, str], ...]]]:
        return type(self), (self.path, self.problems)

    @property
    def fields(self) -> tuple[str, ...]:
        """The offending field paths, in the order reported."""
        return tuple(field for field, _ in self.problems)


class SLOFileError(FileError):
    """An SLO file could not be loaded: unreadable, not YAML, or invalid."""


class TiersFileError(SLOFileError):
    """``tiers.yml`` (the SLA tiers SLO files may name) is unreadable or invalid
    (fields like ``tiers.gold.slo.latency.p99_ms``)."""


class WorkersFileError(FileError):
    """``state/workers.yml`` is unreadable or invalid (fields like ``workers[0].url``)."""


class AlertsFileError(FileError):
    """The alerts file (channels and sinks) is unreadable or invalid (fields like
    ``sinks.oncall.routing_key_env``)."""


class MetricsFileError(FileError):
    """A metrics file given to ``sloguard check`` could not be read: unreadable, of an
    unknown format, or invalid (fields like ``convert:pdf.p95_ms``)."""


class StoreUnavailable(SloguardError):
    """An idempotency store's backend failed or timed out.

    Raised from ``Store.claim`` (and ``wait``) by a networked store.
    ``IdempotencyMiddleware`` answers 503 ``idempotency_store_unavailable``
    when ``fail_open`` is false, and runs the request without idempotency
    (``Idempotency-Stored: false``) when it is true.
    """

    def __init__(self, message: str, *, fail_open: bool) -> None:
        super().__init__(message)
        self.fail_open = fail_open


class HistoryUnavailable(SloguardError):
    """The SLO history store did not answer a call in time, or every thread allowed to
    call it is still stuck in an earlier call.

    The /slo API answers 503 ``history_unavailable``; the recorder keeps its rows
    to retry; an alert is delivered without being recorded.
    """


class RegistrationRefused(SloguardError):
    """The worker registry refused a write from a worker (the controller answers 409)."""

    error = "registration_refused"


class WorkerIdInUse(RegistrationRefused):
    """A registration would move a live worker's id to another URL: the worker must leave
    (``DELETE /workers/{id}``) or let its registration expire first."""

    error = "worker_id_in_use"

    def __init__(self, worker_id: str, url: str) -> None:
        self.worker_id = worker_id
        self.url = url
        super().__init__(
            f"worker {worker_id!r} is registered at {url} and still heartbeating: "
            f"DELETE /workers/{worker_id} first, or wait until its registration expires"
        )

    def __reduce__(self) -> tuple[type[WorkerIdInUse], tuple[str, str]]:
        return type(self), (self.worker_id, self.url)


class StaticWorker(RegistrationRefused):
    """A write over HTTP named a static worker (``workers.yml``, a built-in demo worker):
    those are the operator's, never replaced, heartbeaten or removed over HTTP."""

    error = "static_worker"

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        super().__init__(
            f"worker {worker_id!r} is static (workers.yml or a built-in demo worker): "
            "it cannot be registered, heartbeaten or removed over HTTP"
        )

    def __reduce__(self) -> tuple[type[StaticWorker], tuple[str]]:
        return type(self), (self.worker_id,)


class RegistryFull(RegistrationRefused):
    """The registry holds ``limit`` live registered workers already."""

    error = "registry_full"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"the registry holds its limit of {limit} registered workers: one must leave "
            "or expire first (the limit is serve's --max-workers)"
        )

    def __reduce__(self) -> tuple[type[RegistryFull], tuple[int]]:
        return type(self), (self.limit,)


class RegistryUnavailable(SloguardError):
    """A shared worker registry's backend (Redis) failed or timed out on a worker's write;
    the controller answers 503 ``registry_unavailable`` with ``Retry-After``."""


def _problem_line(path: str, field: str, message: str) -> str:
    return f"{path}: {field}: {message}" if field else f"{path}: {message}"
