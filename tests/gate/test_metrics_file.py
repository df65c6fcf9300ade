"""The metrics file: JSON, YAML or an exposition, detected; every bad input named."""

from __future__ import annotations

from pathlib import Path

import pytest

from sloguard.exceptions import MetricsFileError
from sloguard.gate import Measured, read_metrics_file, write_metrics_file

FIELDS = "p50_ms: 20, p95_ms: 80.5, p99_ms: 150, availability: 0.999, requests: 40"
JSON = '{"convert:pdf": {"p50_ms": 20, "p95_ms": 80.5, "p99_ms": 150, ' + (
    '"availability": 0.999, "requests": 40}}\n'
)
YAML = f"convert:pdf: {{{FIELDS}}}\n"
EXPOSITION = """\
# HELP sloguard_requests_total Requests.
# TYPE sloguard_requests_total counter
sloguard_requests_total{capability="convert:pdf",outcome="ok",priority="normal"} 40.0
"""
EXPECTED = Measured(p50_ms=20, p95_ms=80.5, p99_ms=150, availability=0.999, requests=40)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("metrics.json", JSON),
        ("metrics.yml", YAML),
        ("metrics.yaml", YAML),
        ("metrics", JSON),  # no suffix: '{' first is JSON
        ("metrics.txt", YAML),  # a YAML mapping
    ],
)
def test_json_and_yaml_are_read_by_suffix_or_content(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert read_metrics_file(path) == {"convert:pdf": EXPECTED}


@pytest.mark.parametrize("name", ["scrape.prom", "scrape.txt", "metrics"])
def test_an_exposition_is_recognised_by_suffix_or_its_comment_lines(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    path.write_text(EXPOSITION, encoding="utf-8")
    measured = read_metrics_file(path)
    assert measured["convert:pdf"].requests == 40
    assert measured["convert:pdf"].availability == 1.0


def test_the_format_can_be_forced(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(YAML, encoding="utf-8")
    assert read_metrics_file(path, "yaml") == {"convert:pdf": EXPECTED}
    with pytest.raises(MetricsFileError, match="invalid JSON"):
        read_metrics_file(path)


@pytest.mark.parametrize("name", ["out.json", "out.yml"])
def test_what_is_written_reads_back(tmp_path: Path, name: str) -> None:
    measured = {
        "b:two": Measured.from_samples([0.01, 0.02, 0.5], errors=1),
        "a:one": Measured(requests=0),
    }
    path = tmp_path / "deeper" / name
    write_metrics_file(path, measured)
    assert read_metrics_file(path) == measured
    assert list(read_metrics_file(path)) == ["a:one", "b:two"]  # sorted
    assert [p.name for p in path.parent.iterdir()] == [name]  # nothing left aside


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("m.json", '{"a:b": {"requests": 1,}}', "m.json: invalid JSON: line 1, column 24: "),
        ("m.json", '["a:b"]', "m.json: expected a mapping of capability to measurements, got list"),
        ("m.json", '{"a:b": {"requests": 1, "p95_ms": "fast"}}', "m.json: a:b.p95_ms: "),
        ("m.json", '{"a:b": 3}', "m.json: a:b: "),
        ("m.yml", "a:b: {requests: 1, requests: 2}\n", "m.yml: a:b.requests: duplicate key"),
        ("m.yml", "a:b: [\n", "m.yml: invalid YAML: line 2"),
        ("m.yml", "a:b:\n  requests: 3\n  p99_ms: -2\n", "m.yml: a:b.p99_ms: "),
        ("m.yml", "a:b:\n  requests: 3\n  p90_ms: 2\n", "m.yml: a:b.p90_ms: Extra inputs"),
        ("m.yml", "", "m.yml: file is empty"),
        ("m", "just words\n", "m: unknown format: neither JSON, YAML"),
        ("m.prom", "sloguard_requests_total{a 1\n", "m.prom: not a Prometheus text exposition"),
        ("m.prom", "# ok\nx 1\nwhat is this\n", "(line 3)"),
    ],
)
def test_bad_files_are_named_with_the_field(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MetricsFileError) as info:
        read_metrics_file(path)
    assert info.value.path == path
    assert expected in str(info.value)
    assert str(info.value).startswith(str(path))


def test_a_missing_or_binary_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MetricsFileError, match=r"nope\.json: cannot read file"):
        read_metrics_file(tmp_path / "nope.json")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(MetricsFileError, match=r"binary\.json: cannot read file"):
        read_metrics_file(binary)
