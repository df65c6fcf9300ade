from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sloguard._clock import ManualClock

STATE_SLOS = Path(__file__).resolve().parents[2] / "state" / "controller" / "slos"


def _slo_text(
    verb: str = "convert",
    name: str = "document_to_pdf",
    *,
    p50: float = 50,
    p95: float = 100,
    p99: float = 200,
    target: float = 0.999,
) -> str:
    """A minimal valid SLO file."""
    return (
        f"capability: {{verb: {verb}, name: {name}}}\n"
        f"slo:\n"
        f"  latency: {{p50_ms: {p50}, p95_ms: {p95}, p99_ms: {p99}}}\n"
        f"  availability: {{target: {target}}}\n"
    )


SLOText = Callable[..., str]
WriteFile = Callable[[str, str], Path]


@pytest.fixture
def state_slos() -> Path:
    """The example SLO files shipped in ``state/``."""
    return STATE_SLOS


@pytest.fixture
def seed_text() -> str:
    """The seed's example file, as shipped."""
    return (STATE_SLOS / "convert_document_to_pdf.yml").read_text(encoding="utf-8")


@pytest.fixture
def slo_text() -> SLOText:
    """``slo_text(verb, name, p50=..., p95=..., p99=..., target=...)``: a minimal valid file."""
    return _slo_text


@pytest.fixture
def slo_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "slos"
    directory.mkdir()
    return directory


@pytest.fixture
def write(slo_dir: Path) -> WriteFile:
    def write(filename: str, text: str) -> Path:
        path = slo_dir / filename
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_000_000.0)
