"""``sloguard serve``: the controller behind SLOGuard on uvicorn (uvloop, httptools), in one
process or several.

The command binds its socket itself, so that a busy port is one clear line
and the address it prints is the real one, then hands the socket to uvicorn.
With ``processes > 1`` uvicorn's supervisor runs that many processes
accepting on the one socket; each builds its own app from a
:class:`ServeConfig` (picklable: it crosses to the processes), and they share
what must be shared through Redis: idempotency (``RedisStore``), the worker
registry (``RedisRegistry``) and, through ``PROMETHEUS_MULTIPROC_DIR``, the
Prometheus series. Admission decides per process, from its own windows.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sloguard.exceptions import ConfigurationError
from sloguard.reporting.breaches import DEFAULT_OPEN_AFTER_S, DEFAULT_RESOLVE_AFTER_S
from sloguard.routing.app import MAX_BODY_BYTES
from sloguard.routing.forward import ResponseAborted
from sloguard.routing.registration import DEFAULT_MAX_WORKERS, TOKEN_FILE, read_or_create_token
from sloguard.routing.registry import DEFAULT_HEARTBEAT_TTL_S, Registry, WorkerRegistry

if TYPE_CHECKING:
    from sloguard.middleware import SLOGuard

DEFAULT_REDIS_PREFIX = "sloguard:"
REDIS_TIMEOUT_S = 0.5
"""The idempotency store's budget for one Redis call under ``sloguard serve --redis``."""
FINGERPRINT_SECRET_ENV = "SLOGUARD_FINGERPRINT_SECRET"
"""Where ``sloguard serve`` takes its fingerprint secret from."""


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """What one ``sloguard serve`` process builds; calling it builds the app."""

    state: str = "state"
    history: str | None = None
    tracing: bool = False
    redis: str | None = None
    redis_prefix: str = DEFAULT_REDIS_PREFIX
    heartbeat_ttl_s: float = DEFAULT_HEARTBEAT_TTL_S
    max_body_bytes: int = MAX_BODY_BYTES
    registry_token: str | None = field(default=None, repr=False)
    """What ``/workers`` writes need (None: see :meth:`with_token`)."""
    open_registry: bool = False
    worker_hosts: str | None = None
    worker_ca: str | None = None
    """A PEM file of the CAs ``https://`` workers are verified against (default: the
    system's trust store)."""
    max_workers: int = DEFAULT_MAX_WORKERS
    open_after_s: float = DEFAULT_OPEN_AFTER_S
    resolve_after_s: float = DEFAULT_RESOLVE_AFTER_S
    log_level: str = "info"
    access_log: bool = False
    fingerprint_secret: str | None = field(
        default_factory=lambda: os.environ.get(FINGERPRINT_SECRET_ENV) or None, repr=False
    )
    """Keys the digests of principals and requests (default ``$SLOGUARD_FINGERPRINT_SECRET``);
    every replica sharing a Redis store needs the same one."""

    @property
    def slo_dir(self) -> Path:
        return Path(self.state) / "controller" / "slos"

    @property
    def token_file(self) -> Path:
        return Path(self.state) / TOKEN_FILE

    def with_token(self) -> ServeConfig:
        """This config with its registry token settled once, before any process starts:
        the one given, else the one in ``STATE/registry.token`` (made there, mode 0600,
        when there is none). Unchanged with an open registry."""
        if self.open_registry or self.registry_token:
            return self
        _state_dir(self.state)
        return replace(self, registry_token=read_or_create_token(self.token_file))

    def __call__(self) -> SLOGuard:
        """The controller behind SLOGuard (uvicorn's app factory, once per process)."""
        from sloguard.middleware import SLOGuard
        from sloguard.observability.tracing import default_tracer_provider
        from sloguard.reporting.reporter import Reporter
        from sloguard.routing.app import create_controller_app
        from sloguard.slo.manager import SLOManager

        configure_logging(self.log_level, access_log=self.access_log)
        state = _state_dir(self.state)
        token = self.with_token().registry_token
        manager = SLOManager(self.slo_dir if self.slo_dir.is_dir() else None)
        tracer_provider = default_tracer_provider() if self.tracing else None
        reporter = Reporter(
            manager,
            history=_open_history(self.history or str(state / "history.sqlite3")),
            alerts=state / "controller" / "alerts.yml",
            open_after_s=self.open_after_s,
            resolve_after_s=self.resolve_after_s,
        )
        registry: Registry = WorkerRegistry(
            heartbeat_ttl_s=self.heartbeat_ttl_s, max_workers=self.max_workers
        )
        store = None
        if self.redis is not None:
            from sloguard.idempotency.redis import RedisStore
            from sloguard.routing.redis_registry import RedisRegistry

            registry = RedisRegistry(
                self.redis,
                prefix=self.redis_prefix + "workers:",
                heartbeat_ttl_s=self.heartbeat_ttl_s,
                max_workers=self.max_workers,
            )
            # RedisStore's default budget (50 ms a call) is missed with a few dozen keyed
            # requests in flight in one process (redis-py costs ~0.4 ms a call here),
            # and then every keyed request is a 503: a replay is the request's work.
            store = RedisStore(
                self.redis, prefix=self.redis_prefix + "idem:", timeout_seconds=REDIS_TIMEOUT_S
            )
        app = create_controller_app(
            state,
            manager=manager,
            reporter=reporter,
            registry=registry,
            max_body_bytes=self.max_body_bytes,
            registry_token=token,
            open_registry=self.open_registry,
            worker_hosts=self.worker_hosts,
            worker_ca=self.worker_ca,
            tracing=self.tracing,
            tracer_provider=tracer_provider,
            fingerprint_secret=self.fingerprint_secret,
        )
        guarded = SLOGuard(
            app,
            manager=manager,
            reporter=reporter,
            idempotency={"fingerprint_secret": self.fingerprint_secret},
            store=store,
            tracing=self.tracing,
            tracer_provider=tracer_provider,
        )
        # What start-up built (imports, SLO models, the app) lives as long as the process:
        # frozen, a full collection walks what requests leave behind, not all of it
        # (docs/slo.md, "The garbage collector"). The process is ours; the library never
        # freezes an app it is mounted in.
        gc.collect()
        gc.freeze()
        return guarded

    def check_redis(self) -> None:
        """Raise :class:`ConfigurationError` unless the Redis server answers."""
        if self.redis is None:
            return
        try:
            import redis
        except ImportError as exc:
            raise ConfigurationError(
                "--redis needs redis-py: pip install 'sloguard[redis]'"
            ) from exc
        try:
            client = redis.Redis.from_url(self.redis, socket_connect_timeout=2, socket_timeout=2)
        except ValueError as exc:
            raise ConfigurationError(f"--redis {self.redis}: {exc}") from exc
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            raise ConfigurationError(f"--redis {self.redis}: no answer ({exc})") from exc
        finally:
            client.close()


def _state_dir(state: str) -> Path:
    path = Path(state)
    if not path.is_dir():
        raise ConfigurationError(f"state directory not found: {path} (pass --state DIR)")
    return path


def _open_history(target: str) -> Any:
    from sloguard.reporting.repository import open_repository

    try:
        return open_repository(target)
    except ConfigurationError:
        raise
    except Exception as exc:  # sqlite3, psycopg, a missing extra: all mean "cannot use it"
        raise ConfigurationError(f"cannot open the history store {target}: {exc}") from exc


def parse_port(text: str) -> int:
    """A TCP port from the command line; :class:`ConfigurationError` naming the option."""
    if not text.strip().isdigit() or not 0 <= int(text) <= 65535:
        raise ConfigurationError(f"--port: expected a number from 0 to 65535, got {text!r}")
    return int(text)


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port``; :class:`ConfigurationError` when it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigurationError(
            f"--host {host!r}: not an address this machine has ({exc})"
        ) from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise ConfigurationError(f"cannot listen on {host}:{port}: {reason.lower()}") from exc
    sock.set_inheritable(True)
    return sock


def configure_logging(level: str, *, access_log: bool = False) -> None:
    """sloguard's messages at ``level`` on stderr; uvicorn's own from warning up (all of
    them at debug); its access log at info when asked for; the traceback uvicorn logs
    for an aborted response dropped (the controller logs that in one line)."""
    number: int = logging.getLevelName(level.upper())
    logging.getLogger("sloguard").setLevel(number)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.setLevel(number if number < logging.INFO else max(number, logging.WARNING))
    if not any(isinstance(f, _AbortedResponseFilter) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(_AbortedResponseFilter())
    if access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)


class _AbortedResponseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ResponseAborted))


def run(
    config: ServeConfig,
    sock: socket.socket,
    *,
    processes: int = 1,
    app: Any = None,
) -> None:
    """Serve on ``sock`` until interrupted: ``app`` (built by the caller) in this process,
    or ``processes`` processes that each build their own from ``config``."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    options: dict[str, Any] = {
        "loop": "uvloop",
        "http": "httptools",
        "log_level": config.log_level if config.log_level == "debug" else "warning",
        "access_log": config.access_log,
        "timeout_graceful_shutdown": 5,
        # The controller is a proxy: it appends its peer's address to X-Forwarded-For,
        # so the peer must be the socket's, not one uvicorn took from that header.
        "proxy_headers": False,
    }
    if processes == 1:
        server = uvicorn.Server(uvicorn.Config(app if app is not None else config, **options))
        # uvicorn.Config sets its loggers' levels from log_level: ours go on top.
        configure_logging(config.log_level, access_log=config.access_log)
        server.run(sockets=[sock])
        return
    # A process answers the supervisor's pings only once it has imported sloguard,
    # which takes seconds on a loaded machine: uvicorn's default of 5 s restarts it.
    uvicorn_config = uvicorn.Config(
        config, factory=True, workers=processes, timeout_worker_healthcheck=60, **options
    )
    configure_logging(config.log_level, access_log=config.access_log)
    Multiprocess(uvicorn_config, sockets=[sock]).run()


def multiprocess_metrics_dir() -> str | None:
    """Make a directory for Prometheus's multiprocess mode unless one is set; return it
    (the caller removes it at exit) or None."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    import tempfile

    path = tempfile.mkdtemp(prefix="sloguard-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path
