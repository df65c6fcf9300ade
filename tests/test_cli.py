"""The ``sloguard`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sloguard import __version__
from sloguard.cli import main


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sloguard {__version__}"


def test_the_console_script_is_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from sloguard.cli import main; raise SystemExit(main(['-h']))"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "usage: sloguard" in result.stdout


STATE_SLOS = Path(__file__).resolve().parents[1] / "state" / "controller" / "slos"


@pytest.mark.parametrize("command", ["rules", "dashboard"])
def test_generators_print_for_every_slo_file(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, str(STATE_SLOS)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    if command == "rules":
        groups = yaml.safe_load(captured.out)["groups"]
        names = [g["name"] for g in groups]
    else:
        panels = json.loads(captured.out)["panels"]
        names = [f"sloguard:{p['title']}" for p in panels if p["type"] == "row"][:-1]
    assert names == [
        "sloguard:classify:email",
        "sloguard:convert:document_to_pdf",
        "sloguard:example:capability",
    ]


@pytest.mark.parametrize("command", ["rules", "dashboard"])
def test_a_missing_directory_is_named(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    assert main([command, str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(missing) in captured.err


@pytest.mark.parametrize("command", ["rules", "dashboard"])
def test_a_bad_file_is_named_with_its_field_and_nothing_is_printed(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.yml").write_text((STATE_SLOS / "classify_email.yml").read_text())
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "capability: {verb: a, name: b}\n"
        "slo:\n"
        "  latency: {p50_ms: 50, p95_ms: fast, p99_ms: 200}\n"
        "  availability: {target: 0.99}\n"
    )
    assert main([command, str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # half a rule file would silently drop a capability's alerts
    assert str(bad) in captured.err
    assert "slo.latency.p95_ms" in captured.err


def test_an_empty_directory_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", str(tmp_path)]) == 1
    assert "no SLO files" in capsys.readouterr().err
