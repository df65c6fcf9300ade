"""The ``sloguard`` command."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
