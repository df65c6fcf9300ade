"""The ``sloguard`` command.

Each subcommand is one ``add_*`` function that adds its parser and sets
``handler`` (``Namespace -> exit status``); adding a subcommand is writing one
such function and listing it in ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import math
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sloguard import __version__
from sloguard.exceptions import ConfigurationError

if TYPE_CHECKING:
    from sloguard.slo.schema import SLOFile

logger = logging.getLogger("sloguard.cli")
TOKEN_ENV = "SLOGUARD_API_TOKEN"
REGISTRY_TOKEN_ENV = "SLOGUARD_REGISTRY_TOKEN"
TOKEN_FILE = "registry.token"


def add_serve(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the /route controller behind SLOGuard",
        description="Run the /route controller behind SLOGuard on uvicorn (uvloop, httptools). "
        "With no workers in STATE/workers.yml it starts built-in demo workers, one per SLO "
        "file. Exit 1 on a bad state directory, 2 on bad options (a busy port, a bad --port).",
    )
    parser.add_argument("--state", default="state", help="state directory (default: state)")
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    parser.add_argument("--port", default="8080", help="port, 0 for any free one (default: 8080)")
    parser.add_argument(
        "--processes",
        default="1",
        metavar="N",
        help="serve from N processes on the one port (default: 1); N > 1 needs --redis",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="share idempotency keys and the worker registry through Redis, e.g. "
        "redis://127.0.0.1:6379/0 (needs sloguard[redis])",
    )
    parser.add_argument(
        "--redis-prefix",
        default="sloguard:",
        metavar="PREFIX",
        help="prefix of every Redis key (default: sloguard:)",
    )
    parser.add_argument(
        "--heartbeat-ttl-s",
        default="15",
        metavar="S",
        help="a worker that registered over HTTP and sent no heartbeat for S seconds gets "
        "no traffic (with --redis: its registration expires) (default: 15)",
    )
    parser.add_argument(
        "--max-body-bytes",
        default="10485760",
        metavar="N",
        help="the largest /route request body, 413 above it (default: 10485760, 10 MiB)",
    )
    parser.add_argument(
        "--registry-token",
        metavar="TOKEN",
        help="the token /workers writes need as 'Authorization: Bearer TOKEN' (default: "
        f"${REGISTRY_TOKEN_ENV}, else ${TOKEN_ENV}, else the one in STATE/{TOKEN_FILE}, made "
        "there readable by you alone when there is none; sloguard worker reads it there)",
    )
    parser.add_argument(
        "--open-registry",
        action="store_true",
        help="let anyone who reaches the port register, heartbeat and remove workers, "
        "without a token (local demos only)",
    )
    parser.add_argument(
        "--worker-hosts",
        metavar="LIST",
        help="the hosts workers may register from, e.g. 127.0.0.0/8,10.0.0.0/8,"
        "example.internal,*.svc.cluster.local (names are matched as written, not resolved); "
        "403 for others (default: any)",
    )
    parser.add_argument(
        "--worker-ca",
        metavar="FILE",
        help="verify https:// workers against the CA certificates in FILE (PEM) instead of "
        "the system's trust store, for forwards and health checks (default: the system's "
        "store, or $SSL_CERT_FILE)",
    )
    parser.add_argument(
        "--max-workers",
        default="256",
        metavar="N",
        help="live workers registered over HTTP at once, 409 registry_full beyond "
        "(default: 256; static workers are not counted)",
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log one line per request (default: off)"
    )
    parser.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="sloguard's log level; uvicorn's own messages show from warning up, all of them "
        "at debug (default: info)",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="OpenTelemetry span per request and per forward (needs sloguard[otel]); printed "
        "to stderr unless a tracer provider is set up, e.g. by opentelemetry-instrument",
    )
    parser.add_argument(
        "--history",
        help="where SLO history, breaches and alerts are kept: a SQLite file or a "
        "postgresql:// URL (default: STATE/history.sqlite3)",
    )
    parser.add_argument(
        "--open-after",
        type=_seconds,
        default=55.0,
        metavar="SECONDS",
        help="violating evaluations needed, unbroken, to open a breach (default: 55, "
        "which opens one within 60 s of the first)",
    )
    parser.add_argument(
        "--resolve-after",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="compliant evaluations needed, unbroken, to resolve it (default: 60)",
    )
    parser.set_defaults(handler=serve)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def serve(args: argparse.Namespace) -> int:
    from sloguard.routing import server

    try:
        port = server.parse_port(args.port)
        processes = _positive_int("--processes", args.processes)
        ttl = _positive_float("--heartbeat-ttl-s", args.heartbeat_ttl_s)
        max_body_bytes = _positive_int("--max-body-bytes", args.max_body_bytes)
        max_workers = _positive_int("--max-workers", args.max_workers)
        token, token_from = _registry_token(args)
        if args.worker_hosts is not None:
            from sloguard.routing.registration import WorkerHosts

            WorkerHosts.parse(args.worker_hosts)  # a bad entry is exit 2, here
        if args.worker_ca is not None:
            from sloguard.routing.forward import worker_tls_context

            worker_tls_context(args.worker_ca)  # an unreadable file is exit 2, here
        if processes > 1 and not args.redis:
            raise ConfigurationError(
                f"--processes {processes} needs --redis URL: idempotency keys and the worker "
                "registry must be shared between the processes"
            )
        config = server.ServeConfig(
            state=args.state,
            history=args.history,
            tracing=args.tracing,
            redis=args.redis,
            redis_prefix=args.redis_prefix,
            heartbeat_ttl_s=ttl,
            max_body_bytes=max_body_bytes,
            registry_token=token,
            open_registry=args.open_registry,
            worker_hosts=args.worker_hosts,
            worker_ca=args.worker_ca,
            max_workers=max_workers,
            open_after_s=args.open_after,
            resolve_after_s=args.resolve_after,
            log_level=args.log_level,
            access_log=args.access_log,
        )
        config.check_redis()
    except ConfigurationError as exc:
        print(f"sloguard serve: {exc}", file=sys.stderr)
        return 2
    metrics_dir = server.multiprocess_metrics_dir() if processes > 1 else None
    try:
        try:
            # Built here in every case: a bad state directory, token file or history
            # store is reported once, before any process starts.
            config = config.with_token()
            app = config()
        except ConfigurationError as exc:
            print(f"sloguard serve: {exc}", file=sys.stderr)
            return 1
        try:
            sock = server.bind(args.host, port)
        except ConfigurationError as exc:
            print(f"sloguard serve: {exc}", file=sys.stderr)
            return 2
        manager, controller = app.manager, cast(Any, app.app).state.controller
        for error in manager.errors:
            print(f"sloguard serve: skipped: {error}", file=sys.stderr)
        demo = len(controller.local_workers)
        workers = len(controller.registry) + demo
        kind = f" (built-in demo, in-process: {demo})" if demo else ""
        bound_host, bound_port = sock.getsockname()[:2]
        extra = f", {processes} processes sharing {args.redis}" if processes > 1 else ""
        if args.open_registry:
            registry = "registry open (--open-registry)"
        else:
            where = f"from {token_from}" if token_from else f"in {config.token_file}"
            registry = f"registry token {where}"
        print(
            f"sloguard serve: listening on http://{_url_host(bound_host)}:{bound_port} "
            f"with {len(manager.capabilities)} SLOs from {config.slo_dir} and "
            f"{workers} workers{kind}{extra}; {registry}; "
            f"API token {'on' if os.getenv(TOKEN_ENV) else 'off'}",
            file=sys.stderr,
            flush=True,
        )
        if args.open_registry and not ipaddress.ip_address(bound_host).is_loopback:
            print(
                f"sloguard serve: warning: --open-registry on {bound_host}: anyone who reaches "
                "this port can register a worker and receive its capabilities' requests",
                file=sys.stderr,
                flush=True,
            )
        with sock:
            server.run(config, sock, processes=processes, app=app if processes == 1 else None)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _registry_token(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The registry token ``serve`` was given and where from; (None, None) when none was
    (the token file's is used) or the registry is open."""
    if args.open_registry:
        if args.registry_token:
            raise ConfigurationError("--open-registry and --registry-token: choose one")
        return None, None
    given = [
        (args.registry_token, "--registry-token"),
        (os.environ.get(REGISTRY_TOKEN_ENV), f"${REGISTRY_TOKEN_ENV}"),
        (os.environ.get(TOKEN_ENV), f"${TOKEN_ENV}"),
    ]
    for token, where in given:
        if token:
            if not (token.isascii() and token.isprintable() and " " not in token):
                raise ConfigurationError(f"the registry token in {where} is not printable ASCII")
            return token, where
    return None, None


def _positive_int(option: str, text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigurationError(f"{option}: expected a whole number from 1, got {text!r}")
    return int(text)


def _positive_float(option: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ConfigurationError(f"{option}: expected a positive number, got {text!r}")
    return value


def add_worker(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run a demo worker that registers with a controller",
        description="Run a demo worker: POST /{verb}/{name} answers after a log-normal "
        "delay (or ?delay_ms=N); with --controller it registers and heartbeats, sending the "
        "controller's registry token. Exit 2 on bad options or an unreadable token file.",
    )
    parser.add_argument(
        "--capabilities", required=True, help="comma-separated verb:name list to serve"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9001, help="port (default: 9001)")
    parser.add_argument("--controller", help="controller base URL to register with")
    parser.add_argument("--id", dest="worker_id", help="worker id (default: worker-PORT)")
    parser.add_argument(
        "--heartbeat-s", type=float, default=5.0, help="seconds between heartbeats (default: 5)"
    )
    parser.add_argument(
        "--token",
        help=f"the controller's registry token (prefer ${REGISTRY_TOKEN_ENV}: a command line "
        "is visible to every user of the machine)",
    )
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"read the token from PATH (default, when no token is given: state/{TOKEN_FILE} "
        "if it exists, where sloguard serve writes it)",
    )
    parser.set_defaults(handler=worker)


def worker(args: argparse.Namespace) -> int:
    import uvicorn

    from sloguard.capability import is_capability
    from sloguard.routing import demo_worker_app

    capabilities = [c.strip() for c in args.capabilities.split(",") if c.strip()]
    bad = [c for c in capabilities if not is_capability(c)]
    if not capabilities or bad:
        shown = bad or "(empty)"
        print(f"sloguard worker: --capabilities: not verb:name: {shown}", file=sys.stderr)
        return 2
    try:
        token = _worker_token(args)
    except ConfigurationError as exc:
        print(f"sloguard worker: {exc}", file=sys.stderr)
        return 2
    worker_id = args.worker_id or f"worker-{args.port}"
    url = f"http://{_url_host(args.host)}:{args.port}"
    app = demo_worker_app(capabilities, worker_id=worker_id)
    if args.controller:
        app.router.lifespan_context = _registered(
            args.controller.rstrip("/"), worker_id, url, capabilities, args.heartbeat_s, token
        )
    print(
        f"sloguard worker: {worker_id} listening on {url} for {', '.join(capabilities)}"
        + (f", registering with {args.controller}" if args.controller else ""),
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _worker_token(args: argparse.Namespace) -> str | None:
    """``--token``, ``--token-file``, ``$SLOGUARD_REGISTRY_TOKEN``, ``$SLOGUARD_API_TOKEN``,
    then ``state/registry.token`` if it exists: the first there is (as ``serve`` picks)."""
    from sloguard.routing.registration import read_token_file

    if args.token:
        return str(args.token)
    if args.token_file:
        return read_token_file(args.token_file)
    token = os.environ.get(REGISTRY_TOKEN_ENV) or os.environ.get(TOKEN_ENV)
    if token:
        return token
    default = Path("state") / TOKEN_FILE
    return read_token_file(default) if default.exists() else None


def _registered(
    controller: str,
    worker_id: str,
    url: str,
    capabilities: list[str],
    every_s: float,
    token: str | None = None,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan that registers with the controller, heartbeats, and leaves at shutdown;
    each refusal is printed once (until it changes), and registering is tried again."""
    import httpx

    from sloguard.liveness import stop_task

    spec = {"id": worker_id, "url": url, "capabilities": capabilities}

    async def keep_registered(client: httpx.AsyncClient) -> None:
        registered, said = False, ""
        while True:
            message = ""
            try:
                if registered:
                    answer = await client.post(f"{controller}/workers/{worker_id}/heartbeat")
                    registered = answer.status_code == 200  # 404: the controller restarted
                if not registered:
                    answer = await client.post(f"{controller}/workers", json=spec)
                    registered = answer.status_code in (200, 201)
                    if registered:
                        logger.info("registered with %s", controller)
                    else:
                        message = (
                            f"{controller} refused the registration "
                            f"({answer.status_code}): {_problem_detail(answer)}"
                        )
            except httpx.HTTPError as exc:
                registered = False
                message = f"cannot reach {controller}: {exc}"
            if message and message != said:
                print(f"sloguard worker: {message}", file=sys.stderr, flush=True)
            said = message
            await asyncio.sleep(every_s)

    headers = {"authorization": f"Bearer {token}"} if token else {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=2.0, headers=headers) as client:
            task = asyncio.create_task(keep_registered(client))
            try:
                yield
            finally:
                await stop_task(task)
                with contextlib.suppress(httpx.HTTPError):
                    await client.delete(f"{controller}/workers/{worker_id}")

    return lifespan


def _problem_detail(answer: Any) -> str:
    try:
        return str(answer.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return str(answer.text[:200])


def add_validate(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check SLO files",
        description="Validate an SLO file, or the SLO files of a directory: PATH/controller/"
        "slos/ of a state directory (as `serve --state` reads it), else PATH/slos/, else "
        "PATH's own *.yml / *.yaml. Print each error with its file and field. Exit 0 when "
        "all are valid, 1 when one is invalid, 2 on bad input (no such path, no SLO file).",
    )
    parser.add_argument("path", metavar="PATH", help="an SLO file, or a directory of them")
    parser.set_defaults(handler=validate)


def slo_files_of(path: Path) -> tuple[Path, list[Path]]:
    """Where ``validate PATH`` looks, and the SLO files it finds there.

    A file is itself. A directory is a state directory (``controller/slos/``), a
    directory holding ``slos/``, or a directory of SLO files; other YAML files
    beside them (``workers.yml``, ``alerts.yml``) are never read as SLO files.
    Raises :class:`ConfigurationError` when ``path`` does not exist.
    """
    from sloguard.slo.loader import slo_file_paths

    if path.is_file():
        return path, [path]
    if not path.is_dir():
        raise ConfigurationError(f"no such file or directory: {path}")
    for where in (path / "controller" / "slos", path / "slos"):
        if where.is_dir():
            return where, slo_file_paths(where)
    return path, slo_file_paths(path)


def validate(args: argparse.Namespace) -> int:
    from sloguard.slo.loader import read_slo_files, resolve_claims

    try:
        where, paths = slo_files_of(Path(args.path))
    except ConfigurationError as exc:
        print(f"sloguard validate: {exc}", file=sys.stderr)
        return 2
    if not paths:
        print(f"sloguard validate: no SLO files (*.yml, *.yaml) in {where}", file=sys.stderr)
        return 2
    parsed, errors = read_slo_files(paths)
    loaded, duplicates = resolve_claims(parsed)
    errors += duplicates
    for error in errors:
        print(error, file=sys.stderr)
    print(f"{len(loaded)} valid, {len(errors)} invalid SLO files in {where}")
    return 1 if errors else 0


def add_check(subparsers: Any) -> None:
    from sloguard.gate import METRICS_FORMATS, REPORT_FORMATS

    parser = subparsers.add_parser(
        "check",
        help="fail a build when measured metrics miss their SLOs (a CI gate)",
        description="Judge the metrics of FILE against the SLO files of DIR and print a "
        "table of each capability against its targets. Exit 0 when every capability "
        "complies, 1 when one violates its SLO, 2 on bad input. FILE is the JSON or "
        "YAML the pytest plugin writes (--metrics-output) or a saved Prometheus scrape.",
    )
    parser.add_argument("--slos", required=True, metavar="DIR", help="directory of SLO files")
    parser.add_argument(
        "--metrics", required=True, metavar="FILE", help="metrics file (JSON, YAML, Prometheus)"
    )
    parser.add_argument(
        "--metrics-format",
        choices=METRICS_FORMATS,
        default="auto",
        help="format of FILE (default: auto, by suffix then content)",
    )
    parser.add_argument(
        "--format",
        dest="report_format",
        choices=REPORT_FORMATS,
        default="text",
        help="report format (default: text)",
    )
    parser.add_argument("--output", metavar="FILE", help="write the report here, not to stdout")
    parser.add_argument(
        "--min-requests",
        type=int,
        metavar="N",
        help="requests a capability needs for a verdict (default: its SLO's "
        "shedding.min_samples, 20 unless set)",
    )
    parser.add_argument(
        "--fail-on-insufficient-data",
        action="store_true",
        help="fail (exit 1) when a capability with an SLO has too few requests",
    )
    parser.set_defaults(handler=check)


def check(args: argparse.Namespace) -> int:
    from sloguard.gate import judge, read_metrics_file, render

    loaded = _load_slos("check", args.slos)
    if loaded is None:
        return 2
    if args.min_requests is not None and args.min_requests < 1:
        print(
            f"sloguard check: --min-requests must be at least 1, got {args.min_requests}",
            file=sys.stderr,
        )
        return 2
    try:
        measured = read_metrics_file(args.metrics, args.metrics_format)
    except ConfigurationError as exc:
        for line in str(exc).splitlines():
            print(f"sloguard check: {line}", file=sys.stderr)
        return 2
    report = judge(
        loaded,
        measured,
        min_requests=args.min_requests,
        fail_on_insufficient_data=args.fail_on_insufficient_data,
    )
    text = render(report, args.report_format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"sloguard check: cannot write {args.output}: {exc}", file=sys.stderr)
            return 2
        print(report.summary(), file=sys.stderr)
    return 0 if report.passed else 1


def _load_slos(command: str, directory: str) -> list[SLOFile] | None:
    """The SLO files of ``directory``; None, after printing each error as ``validate``
    does, when the directory is missing or empty or a file is invalid."""
    from sloguard.slo.loader import load_slo_dir

    try:
        loaded, errors = load_slo_dir(directory)
    except ConfigurationError as exc:
        print(f"sloguard {command}: {exc}", file=sys.stderr)
        return None
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        print(
            f"sloguard {command}: {len(errors)} invalid SLO files in {directory}", file=sys.stderr
        )
        return None
    if not loaded:
        print(f"sloguard {command}: no SLO files (*.yml, *.yaml) in {directory}", file=sys.stderr)
        return None
    return list(loaded.values())


def add_rules(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "rules",
        help="print Prometheus recording and alerting rules for the SLO files of DIR",
        description="Print Prometheus recording and alerting rules (YAML) for the SLO files "
        "of DIR: multi-window burn-rate alerts and error-budget alerts.",
    )
    parser.add_argument("directory", metavar="DIR", help="directory of SLO files (*.yml, *.yaml)")
    parser.set_defaults(handler=rules)


def rules(args: argparse.Namespace) -> int:
    from sloguard.observability.rules import rules_main

    return rules_main(args.directory)


def add_dashboard(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="print a Grafana dashboard (JSON) for the SLO files of DIR",
        description="Print a Grafana dashboard (JSON model) with one row per capability of DIR.",
    )
    parser.add_argument("directory", metavar="DIR", help="directory of SLO files (*.yml, *.yaml)")
    parser.set_defaults(handler=dashboard)


def dashboard(args: argparse.Namespace) -> int:
    from sloguard.observability.dashboard import dashboard_main

    return dashboard_main(args.directory)


def add_demo(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run an overload scenario on loopback, narrated, and write a report",
        description="Overload a service of fixed capacity behind SLOGuard at 3x its capacity, "
        "without and then with load shedding; narrate it and write demo-report.html (and "
        "demo-report.png with matplotlib: pip install 'sloguard[demo]'). Stops by itself.",
    )
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds, both runs (default: 60)"
    )
    parser.add_argument("--out", default=".", help="directory of the report (default: .)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: free)")
    parser.set_defaults(handler=demo)


def demo(args: argparse.Namespace) -> int:
    from sloguard.demo import DemoConfig, run_demo

    try:
        config = DemoConfig(duration_s=args.duration, port=args.port)
    except ConfigurationError as exc:
        print(f"sloguard demo: --{exc}", file=sys.stderr)
        return 2
    try:
        run_demo(config, out_dir=args.out)
    except KeyboardInterrupt:
        print("\nsloguard demo: interrupted; nothing is left running", file=sys.stderr)
        return 130
    return 0


SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (
    add_serve,
    add_worker,
    add_validate,
    add_check,
    add_rules,
    add_dashboard,
    add_demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sloguard",
        description="SLO-aware ASGI middleware: idempotency keys, SLOs and load shedding.",
    )
    parser.add_argument("--version", action="version", version=f"sloguard {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:  # `sloguard` alone: what it can do, and a failure for scripts
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("sloguard").setLevel(logging.INFO)
    return handler(args)


def _url_host(host: str) -> str:
    with contextlib.suppress(OSError):
        if socket.inet_pton(socket.AF_INET6, host):
            return f"[{host}]"
    return host
