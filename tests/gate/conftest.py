"""SLO files for the gate's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from sloguard.slo import SLOFile, load_slo_dir

PDF = """\
capability: {verb: convert, name: pdf}
slo:
  latency: {p50_ms: 50, p95_ms: 100, p99_ms: 200}
  availability: {target: 0.99}
"""
EMAIL = """\
capability: {verb: classify, name: email}
slo:
  latency: {p50_ms: 20, p95_ms: 60, p99_ms: 120}
  availability: {target: 0.995}
shedding: {min_samples: 5}
"""


@pytest.fixture
def slo_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "slos"
    directory.mkdir()
    (directory / "pdf.yml").write_text(PDF, encoding="utf-8")
    (directory / "email.yml").write_text(EMAIL, encoding="utf-8")
    return directory


@pytest.fixture
def slos(slo_dir: Path) -> list[SLOFile]:
    loaded, errors = load_slo_dir(slo_dir)
    assert errors == []
    return list(loaded.values())
