"""SLA tiers: the built-in presets, the file's overrides, tiers.yml, and their errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sloguard import SLOManager
from sloguard.exceptions import SLOFileError, TiersFileError
from sloguard.slo import load_slo_dir, load_slo_file
from sloguard.slo.tiers import BUILTIN_TIERS, load_tiers_file, tiers_path_for

HEAD = "capability: {verb: convert, name: pdf}\n"


def write(directory: Path, text: str, name: str = "pdf.yml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("tier", "availability", "p99_ms", "error_pct", "min_rps"),
    [
        ("bronze", 0.99, 1000, 1.0, 10),
        ("silver", 0.995, 500, 0.5, 50),
        ("gold", 0.999, 200, 0.1, 100),
        ("Platinum", 0.9999, 100, 0.01, 500),  # names are case-insensitive
    ],
)
def test_a_builtin_tier_supplies_its_targets(
    tmp_path: Path, tier: str, availability: float, p99_ms: float, error_pct: float, min_rps: float
) -> None:
    slo = load_slo_file(write(tmp_path, HEAD + f"tier: {tier}\n"))
    assert slo.tier == tier.lower()
    assert slo.slo.availability.target == availability
    assert slo.slo.latency.targets() == {"p50_ms": None, "p95_ms": None, "p99_ms": p99_ms}
    assert slo.slo.error_rate is not None
    assert slo.slo.error_rate.max_pct == error_pct
    assert slo.slo.throughput is not None
    assert slo.slo.throughput.min_rps == min_rps


def test_the_files_own_values_override_the_tier_field_by_field(tmp_path: Path) -> None:
    text = HEAD + (
        "tier: gold\n"
        "slo:\n"
        "  latency: {p95_ms: 120}\n"  # p99 stays the tier's 200
        "  availability: {target: 0.9995}\n"
        "  throughput: {min_rps: 40}\n"
    )
    slo = load_slo_file(write(tmp_path, text))
    assert slo.slo.latency.targets() == {"p50_ms": None, "p95_ms": 120, "p99_ms": 200}
    assert slo.slo.availability.target == 0.9995
    assert slo.slo.error_rate is not None
    assert slo.slo.error_rate.max_pct == 0.1
    assert slo.slo.throughput is not None
    assert slo.slo.throughput.min_rps == 40


def test_without_a_tier_a_file_needs_its_own_targets(tmp_path: Path) -> None:
    with pytest.raises(SLOFileError) as info:
        load_slo_file(write(tmp_path, HEAD + "slo: {latency: {p99_ms: 50}}\n"))
    assert info.value.fields == ("slo.availability",)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("tier: diamond", "unknown tier 'diamond' (known: bronze, gold, platinum, silver)"),
        ("tier: 3", "must be a tier name (a string), got int"),
    ],
)
def test_a_bad_tier_name_is_reported_on_the_tier_field(
    tmp_path: Path, line: str, message: str
) -> None:
    path = write(tmp_path, HEAD + line + "\n")
    with pytest.raises(SLOFileError) as info:
        load_slo_file(path)
    assert str(info.value) == f"{path}: tier: {message}"


def test_an_override_that_contradicts_the_tier_names_the_tiers_value(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "tier: platinum\nslo: {latency: {p50_ms: 150}}\n")
    with pytest.raises(SLOFileError) as info:
        load_slo_file(path)
    assert str(info.value) == (
        f"{path}: slo.latency: percentiles must not decrease: p50_ms=150, p99_ms=100 "
        "(tier platinum sets slo.latency.p99_ms=100.0)"
    )


TIERS = """\
tiers:
  internal:
    description: best effort, for our own tools
    slo:
      latency: {p95_ms: 2000}
      availability: {target: 0.95}
  gold:
    slo:
      latency: {p95_ms: 150, p99_ms: 300}
      availability: {target: 0.998}
    credits: [{below_pct: 99.8, credit_pct: 10}]
    max_credit_pct: 25
"""


def test_tiers_yml_beside_the_slo_directory_adds_and_redefines_tiers(tmp_path: Path) -> None:
    (tmp_path / "tiers.yml").write_text(TIERS, encoding="utf-8")
    slos = tmp_path / "slos"
    write(slos, HEAD + "tier: gold\n")
    write(slos, "capability: {verb: tool, name: x}\ntier: internal\n", "tool.yml")
    manager = SLOManager(slos)
    assert manager.errors == []
    gold = manager.get_slo("convert:pdf")
    assert gold is not None
    # Redefined whole: no throughput or error rate from the built-in gold.
    assert gold.slo.latency.targets() == {"p50_ms": None, "p95_ms": 150, "p99_ms": 300}
    assert (gold.slo.error_rate, gold.slo.throughput) == (None, None)
    assert [(c.below_pct, c.credit_pct) for c in gold.credits] == [(99.8, 10)]
    assert gold.max_credit_pct == 25
    internal = manager.get_slo("tool:x")
    assert internal is not None
    assert internal.slo.availability.target == 0.95
    assert set(manager.tiers.names) == {*BUILTIN_TIERS, "internal"}
    # load_slo_dir (sloguard validate, rules, dashboard) reads the same file.
    loaded, errors = load_slo_dir(slos)
    assert errors == []
    assert {slo.key: slo for slo in loaded.values()}["convert:pdf"] == gold


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("tiers: {gold: {slo: {latency: {p99_ms: -1}}}}", "tiers.gold.slo.latency.p99_ms", ""),
        ("tiers: {gold: {slo: {latency: {}}}}", "tiers.gold.slo.latency", "give at least one"),
        ("tiers: {gold: {colour: red}}", "tiers.gold.colour", "Extra inputs"),
        ("tiers: {'bad name': {}}", "tiers.bad name.[key]", ""),
        ("tiers: {Gold: {}, gold: {}}", "tiers.gold", "tier names are case-insensitive"),
        ("tiers: [gold]", "tiers", "valid dictionary"),
        ("- gold\n", "", "expected a mapping with 'tiers', got list"),
        ("tiers: {gold: {}, gold: {}}", "tiers.gold", "duplicate key"),
    ],
)
def test_a_bad_tiers_file_is_reported_with_file_and_field(
    tmp_path: Path, text: str, field: str, message: str
) -> None:
    path = tmp_path / "tiers.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TiersFileError) as info:
        load_tiers_file(path)
    assert info.value.path == path
    assert info.value.fields[0] == field
    assert message in info.value.problems[0][1]
    assert str(info.value).startswith(f"{path}: ")


def test_a_bad_tiers_file_refuses_the_files_naming_a_tier_and_keeps_the_others(
    tmp_path: Path,
) -> None:
    (tmp_path / "tiers.yml").write_text("tiers: {gold: {slo: 7}}\n", encoding="utf-8")
    slos = tmp_path / "slos"
    write(slos, HEAD + "tier: gold\n")
    write(
        slos,
        "capability: {verb: plain, name: x}\n"
        "slo: {latency: {p95_ms: 10}, availability: {target: 0.9}}\n",
        "plain.yml",
    )
    manager = SLOManager(slos)
    assert manager.capabilities == ("plain:x",)
    tiers_error, pdf_error = manager.errors
    assert isinstance(tiers_error, TiersFileError)
    assert tiers_error.fields == ("tiers.gold.slo",)
    assert pdf_error.fields == ("tier",)
    assert "cannot be applied" in pdf_error.problems[0][1]


def test_a_reload_with_a_broken_tiers_file_keeps_its_last_good_version(tmp_path: Path) -> None:
    tiers = tmp_path / "tiers.yml"
    tiers.write_text(TIERS, encoding="utf-8")
    slos = tmp_path / "slos"
    write(slos, HEAD + "tier: gold\n")
    manager = SLOManager(slos)
    tiers.write_text("tiers: {gold: {slo: {latency: {p99_ms: oops}}}}\n", encoding="utf-8")
    os.utime(tiers, ns=(0, 10**18))  # a different mtime, however fast the test runs
    assert manager.reload_if_changed()
    assert [type(e) for e in manager.errors] == [TiersFileError]
    gold = manager.get_slo("convert:pdf")
    assert gold is not None
    assert gold.slo.latency.p99_ms == 300  # still the last good tiers.yml's gold


def test_the_tiers_file_is_looked_for_beside_the_slo_directory(tmp_path: Path) -> None:
    assert (
        tiers_path_for(tmp_path / "controller" / "slos")
        == (tmp_path / "controller" / "tiers.yml").resolve()
    )
