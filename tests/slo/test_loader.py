from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from sloguard.exceptions import ConfigurationError, SLOFileError
from sloguard.slo import load_slo_dir, load_slo_file

SLOText = Callable[..., str]
WriteFile = Callable[[str, str], Path]


def test_shipped_state_files_load_without_errors(state_slos: Path) -> None:
    files, errors = load_slo_dir(state_slos)
    assert errors == []
    assert {slo.key for slo in files.values()} == {
        "convert:document_to_pdf",
        "classify:email",
        "example:capability",
    }
    assert {p.name for p in files} == {
        "convert_document_to_pdf.yml",
        "classify_email.yml",
        "example-capability.yml",
    }


def test_load_slo_file_returns_the_model(write: WriteFile, seed_text: str) -> None:
    slo = load_slo_file(str(write("convert.yml", seed_text)))
    assert slo.key == "convert:document_to_pdf"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("capability: {verb: a, name: b\nslo: [", "invalid YAML"),
        ("key: value\n  - nested: wrong\n", "invalid YAML"),
        ("", "file is empty"),
        ("# only a comment\n", "file is empty"),
        ("- a\n- b\n", "expected a mapping at the top level, got list"),
        ("just a string\n", "expected a mapping at the top level, got str"),
        ("a: 1\n---\nb: 2\n", "invalid YAML"),
    ],
)
def test_unparseable_file_is_reported_as_a_whole(write: WriteFile, text: str, message: str) -> None:
    path = write("bad.yml", text)
    with pytest.raises(SLOFileError) as info:
        load_slo_file(path)
    assert info.value.path == path
    assert info.value.fields == ("",)
    assert str(info.value).startswith(f"{path}: {message}")


def test_invalid_yaml_message_gives_the_line(write: WriteFile) -> None:
    path = write("bad.yml", "capability:\n  verb: a\n  name: [b\n")
    with pytest.raises(SLOFileError, match="line"):
        load_slo_file(path)


def test_unreadable_file_is_reported(write: WriteFile, slo_dir: Path) -> None:
    path = slo_dir / "missing.yml"
    with pytest.raises(SLOFileError, match="cannot read file"):
        load_slo_file(path)
    binary = slo_dir / "binary.yml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(SLOFileError, match="cannot read file"):
        load_slo_file(binary)


def test_validation_errors_name_the_file_and_each_field(write: WriteFile, seed_text: str) -> None:
    text = (
        seed_text.replace("p95_ms: 100", 'p95_ms: "fast"')
        .replace("threshold: 0.9", "threshold: 1.5")
        .replace("owner: document-team", "owner: document-team, colour: blue")
    )
    path = write("convert.yml", text)
    with pytest.raises(SLOFileError) as info:
        load_slo_file(path)
    error = info.value
    assert error.fields == (
        "slo.latency.p95_ms",
        "slo.error_budget.alerts[1].threshold",
        "metadata.colour",
    )
    lines = str(error).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{path}: slo.latency.p95_ms: ")
    assert lines[1].startswith(f"{path}: slo.error_budget.alerts[1].threshold: ")
    assert lines[2] == f"{path}: metadata.colour: Extra inputs are not permitted"


def test_own_validator_messages_read_plainly(write: WriteFile, slo_text: SLOText) -> None:
    path = write("c.yml", slo_text(p50=300))
    with pytest.raises(SLOFileError) as info:
        load_slo_file(path)
    assert str(info.value) == (
        f"{path}: slo.latency: percentiles must not decrease: p50_ms=300, p95_ms=100, p99_ms=200"
    )


def test_a_bad_name_is_explained_in_words_not_by_its_pattern(write: WriteFile) -> None:
    path = write("c.yml", BLOCK_STYLE.replace("name: document_to_pdf", "name: document to pdf"))
    with pytest.raises(SLOFileError) as info:
        load_slo_file(path)
    assert str(info.value) == (
        f"{path}: capability.name: 'document to pdf' is not a valid name: use letters, digits, "
        "'_', '.' and '-' (no spaces or ':'), starting with a letter, a digit or '_'"
    )
    assert "[A-Za-z" not in str(info.value)


@pytest.mark.parametrize(
    ("given", "meant"), [("99.9", "0.999"), ("99.95", "0.9995"), ("95", "0.95")]
)
def test_a_target_written_as_a_percentage_hints_the_fraction(
    write: WriteFile, given: str, meant: str
) -> None:
    path = write("c.yml", BLOCK_STYLE.replace("target: 0.999", f"target: {given}"))
    with pytest.raises(SLOFileError) as info:
        load_slo_file(path)
    assert str(info.value) == (
        f"{path}: slo.availability.target: {given} is a percentage; the target is a fraction "
        f"between 0 and 1: did you mean {meant}?"
    )


BLOCK_STYLE = """\
capability:
  verb: convert
  name: document_to_pdf
slo:
  latency:
    p50_ms: 50
    p95_ms: 100
    p99_ms: 200
  availability:
    target: 0.999
"""


def test_a_key_given_twice_is_refused_with_its_path_and_lines(write: WriteFile) -> None:
    path = write(
        "x.yml", BLOCK_STYLE.replace("    p99_ms: 200\n", "    p99_ms: 200\n    p95_ms: 90\n")
    )
    with pytest.raises(SLOFileError) as info:
        load_slo_file(path)
    assert str(info.value) == f"{path}: slo.latency.p95_ms: duplicate key (line 9, first on line 7)"
    assert info.value.fields == ("slo.latency.p95_ms",)


def test_a_second_block_is_refused_not_merged_over_the_first(
    write: WriteFile, seed_text: str
) -> None:
    path = write("x.yml", seed_text + "slo:\n  latency: {p50_ms: 1, p95_ms: 2, p99_ms: 3}\n")
    with pytest.raises(SLOFileError) as info:
        load_slo_file(path)
    assert str(info.value) == f"{path}: slo: duplicate key (line 10, first on line 2)"


def test_every_repeated_key_is_reported_in_flow_style_and_in_lists(
    write: WriteFile, seed_text: str
) -> None:
    text = seed_text.replace("channel: pagerduty}", "channel: pagerduty, channel: sms}").replace(
        'version: "1.0"}', "version: \"1.0\", 'verb': pdf}"
    )
    path = write("x.yml", text)
    with pytest.raises(SLOFileError) as info:
        load_slo_file(path)
    assert info.value.problems == (
        ("capability.verb", "duplicate key (line 1, first on line 1)"),
        ("slo.error_budget.alerts[1].channel", "duplicate key (line 7, first on line 7)"),
    )


def test_a_key_after_a_merge_overrides_it_and_is_no_duplicate(write: WriteFile) -> None:
    text = BLOCK_STYLE + (
        "  error_budget:\n"
        "    alerts:\n"
        "      - &slack {threshold: 0.5, channel: slack}\n"
        "      - {<<: *slack, threshold: 0.9}\n"
    )
    slo = load_slo_file(write("x.yml", text))
    assert [(a.threshold, a.channel) for a in slo.slo.error_budget.alerts] == [
        (0.5, "slack"),
        (0.9, "slack"),
    ]


def test_slo_file_error_is_a_configuration_error_and_pickles(write: WriteFile) -> None:
    path = write("bad.yml", "")
    with pytest.raises(ConfigurationError) as info:
        load_slo_file(path)
    assert isinstance(info.value, SLOFileError)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.path, copy.problems, str(copy)) == (path, info.value.problems, str(info.value))


def test_directory_loads_good_files_and_lists_bad_ones(
    write: WriteFile, slo_dir: Path, slo_text: SLOText
) -> None:
    write("a.yml", slo_text("convert", "a"))
    write("b.yaml", slo_text("convert", "b"))
    write("c.yml", slo_text("convert", "c", target=1.5))
    write("d.yml", "")
    write("notes.txt", "not an SLO")
    write(".e.yml", "editor swap file: never read")
    (slo_dir / "sub.yml").mkdir()
    files, errors = load_slo_dir(slo_dir)
    assert sorted(slo.key for slo in files.values()) == ["convert:a", "convert:b"]
    assert [(e.path.name, e.fields) for e in errors] == [
        ("c.yml", ("slo.availability.target",)),
        ("d.yml", ("",)),
    ]


def test_two_files_claiming_one_capability_name_both(
    write: WriteFile, slo_dir: Path, slo_text: SLOText
) -> None:
    first = write("a.yml", slo_text("convert", "pdf", p95=100))
    second = write("b.yml", slo_text("convert", "pdf", p95=150))
    files, errors = load_slo_dir(slo_dir)
    assert list(files) == [first]
    assert files[first].slo.latency.p95_ms == 100
    [error] = errors
    assert error.path == second
    assert error.fields == ("capability",)
    assert str(first) in str(error)
    assert str(second) in str(error)


def test_missing_directory_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigurationError, match="nowhere"):
        load_slo_dir(missing)
