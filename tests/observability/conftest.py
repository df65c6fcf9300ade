"""Fixtures for the observability tests: promtool, and SLO directories."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

STATE_SLOS = Path(__file__).resolve().parents[2] / "state" / "controller" / "slos"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture
def promtool() -> str:
    """The path of promtool; the test is skipped without it, and fails when CI is set."""
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not installed (Debian: apt-get install prometheus)"
        if in_ci():
            pytest.fail(f"{reason}; CI is set, so the promtool tests must run", pytrace=False)
        pytest.skip(f"{reason}; .ci/run installs it")
    return path


@pytest.fixture
def state_slos() -> Path:
    """The example SLO files shipped in ``state/``."""
    return STATE_SLOS
