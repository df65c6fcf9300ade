"""The ``sloguard`` command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sloguard import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sloguard",
        description="SLO-aware ASGI middleware: idempotency keys, SLOs and load shedding.",
    )
    parser.add_argument("--version", action="version", version=f"sloguard {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return 0
