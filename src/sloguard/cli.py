"""The ``sloguard`` command."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from sloguard import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sloguard",
        description="SLO-aware ASGI middleware: idempotency keys, SLOs and load shedding.",
    )
    parser.add_argument("--version", action="version", version=f"sloguard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    rules = commands.add_parser(
        "rules",
        help="print Prometheus recording and alerting rules for the SLO files of DIR",
        description="Print Prometheus recording and alerting rules (YAML) for the SLO files "
        "of DIR: multi-window burn-rate alerts and error-budget alerts.",
    )
    rules.add_argument("directory", metavar="DIR", help="directory of SLO files (*.yml, *.yaml)")
    rules.set_defaults(run=_rules)
    dashboard = commands.add_parser(
        "dashboard",
        help="print a Grafana dashboard (JSON) for the SLO files of DIR",
        description="Print a Grafana dashboard (JSON model) with one row per capability of DIR.",
    )
    dashboard.add_argument(
        "directory", metavar="DIR", help="directory of SLO files (*.yml, *.yaml)"
    )
    dashboard.set_defaults(run=_dashboard)
    return parser


def _rules(args: argparse.Namespace) -> int:
    from sloguard.observability.rules import rules_main

    return rules_main(args.directory)


def _dashboard(args: argparse.Namespace) -> int:
    from sloguard.observability.dashboard import dashboard_main

    return dashboard_main(args.directory)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    return 0 if run is None else run(args)
