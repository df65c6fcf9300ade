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


def test_the_concurrency_limit_is_adaptive_by_default() -> None:
    config = SheddingConfig().concurrency
    assert (config.mode, config.initial_limit, config.min, config.max) == ("adaptive", 10, 2, 1000)
    assert (config.setpoint, config.tolerance, config.interval_ms) == (0.8, 1.5, 100.0)
    assert (config.queue.size, config.queue.max_wait_ms, config.queue.deadline) == (
        100,
        1000.0,
        "p99",
    )


def test_concurrency_overrides_are_read(tmp_path: Path) -> None:
    path = tmp_path / "pdf.yml"
    path.write_text(
        SLO + "shedding:\n  concurrency: {mode: fixed, initial: 4, max: 8, "
        "queue: {size: 0, deadline: p50}}\n",
        encoding="utf-8",
    )
    config = load_slo_file(path).shedding.concurrency
    assert (config.mode, config.initial_limit, config.min, config.max) == ("fixed", 4, 2, 8)
    assert (config.queue.size, config.queue.deadline) == (0, "p50")


def test_an_unquoted_off_turns_the_limit_off(tmp_path: Path) -> None:
    path = tmp_path / "pdf.yml"
    path.write_text(SLO + "shedding: {concurrency: {mode: off}}\n", encoding="utf-8")
    assert load_slo_file(path).shedding.concurrency.mode == "off"


def test_an_initial_limit_left_out_is_kept_within_the_bounds(tmp_path: Path) -> None:
    path = tmp_path / "pdf.yml"
    path.write_text(SLO + "shedding: {concurrency: {max: 4}}\n", encoding="utf-8")
    assert load_slo_file(path).shedding.concurrency.initial_limit == 4


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
        ("{concurrency: {mode: fast}}", "shedding.concurrency.mode"),
        ("{concurrency: {mode: 'on'}}", "shedding.concurrency.mode"),
        ("{concurrency: {mode: on}}", "shedding.concurrency.mode"),
        ("{concurrency: {min: 0}}", "shedding.concurrency.min"),
        ("{concurrency: {min: -4}}", "shedding.concurrency.min"),
        ("{concurrency: {max: 2.5}}", "shedding.concurrency.max"),
        ("{concurrency: {initial: '8'}}", "shedding.concurrency.initial"),
        ("{concurrency: {min: 50, max: 10}}", "shedding.concurrency"),
        ("{concurrency: {initial: 2000}}", "shedding.concurrency"),
        ("{concurrency: {min: 8, initial: 4}}", "shedding.concurrency"),
        ("{concurrency: {setpoint: 0}}", "shedding.concurrency.setpoint"),
        ("{concurrency: {setpoint: 1.2}}", "shedding.concurrency.setpoint"),
        ("{concurrency: {tolerance: 1.0}}", "shedding.concurrency.tolerance"),
        ("{concurrency: {interval_ms: -100}}", "shedding.concurrency.interval_ms"),
        ("{concurrency: {queue: {size: -1}}}", "shedding.concurrency.queue.size"),
        ("{concurrency: {queue: {max_wait_ms: 0}}}", "shedding.concurrency.queue.max_wait_ms"),
        ("{concurrency: {queue: {deadline: p90}}}", "shedding.concurrency.queue.deadline"),
        ("{concurrency: {queue: {length: 5}}}", "shedding.concurrency.queue.length"),
        ("{concurrency: {limit: 5}}", "shedding.concurrency.limit"),
        ("{concurrency: adaptive}", "shedding.concurrency"),
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
