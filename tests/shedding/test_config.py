"""The ``shedding:`` section of an SLO file: defaults, and bad values named by file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from sloguard.exceptions import SLOFileError
from sloguard.slo import SheddingConfig, load_slo_file

SLO = """\
capability: {verb: convert, name: pdf}
slo:
  latency: {p50_ms: 50, p95_ms: 100, p99_ms: 200}
  availability: {target: 0.99}
"""


def test_every_field_has_a_default() -> None:
    config = SheddingConfig()
    assert config.enabled is True
    assert config.min_samples == 20
    assert config.shed_priorities == ("low", "normal")
    assert (config.max_rejection.low, config.max_rejection.normal) == (0.95, 0.5)
    assert config.retry_after_s == 5
    assert config.window_s is None


def test_overrides_are_read(tmp_path: Path) -> None:
    path = tmp_path / "pdf.yml"
    path.write_text(
        SLO + "shedding: {max_rejection: {low: 0.8}, hysteresis: 0.2, window_s: 30}\n",
        encoding="utf-8",
    )
    config = load_slo_file(path).shedding
    assert (config.max_rejection.low, config.max_rejection.normal) == (0.8, 0.5)
    assert (config.hysteresis, config.window_s) == (0.2, 30.0)


@pytest.mark.parametrize(
    ("shedding", "field"),
    [
        ("{min_samples: 0}", "shedding.min_samples"),
        ("{min_samples: '20'}", "shedding.min_samples"),
        ("{retry_after_s: 0}", "shedding.retry_after_s"),
        ("{shed_priorities: [critical]}", "shedding.shed_priorities[0]"),
        ("{shed_priorities: [urgent]}", "shedding.shed_priorities[0]"),
        ("{shed_priorities: [low, low]}", "shedding"),
        ("{max_rejection: {low: 1.5}}", "shedding.max_rejection.low"),
        ("{max_rejection: {low: 0}}", "shedding.max_rejection.low"),
        ("{max_rejection: {critical: 0.5}}", "shedding.max_rejection.critical"),
        ("{full_at: 1.0}", "shedding.full_at"),
        ("{severe_at: 0.5}", "shedding.severe_at"),
        ("{hysteresis: 1.0}", "shedding.hysteresis"),
        ("{hysteresis: -0.1}", "shedding.hysteresis"),
        ("{persist_s: 0}", "shedding.persist_s"),
        ("{recovery_s: .inf}", "shedding.recovery_s"),
        ("{window_s: -60}", "shedding.window_s"),
        ("{enabled: 'yes'}", "shedding.enabled"),
        ("{max_rejection_ratio: 0.9}", "shedding.max_rejection_ratio"),
    ],
)
def test_bad_shedding_values_name_the_file_and_the_field(
    tmp_path: Path, shedding: str, field: str
) -> None:
    path = tmp_path / "pdf.yml"
    path.write_text(SLO + f"shedding: {shedding}\n", encoding="utf-8")
    with pytest.raises(SLOFileError) as info:
        load_slo_file(path)
    assert info.value.path == path
    assert info.value.fields == (field,)
    assert str(info.value).startswith(f"{path}: {field}: ")
