"""README.md's commands do on this repository what README.md says they do."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def test_the_two_commands_come_first_as_they_are() -> None:
    """The landing page opens with how to run it and how to test it, from a clean clone."""
    run, test = bash_blocks(README.read_text(encoding="utf-8"))[:2]
    venv = "python3 -m venv .venv && . .venv/bin/activate && "
    assert run.strip() == venv + "pip install -e . && sloguard serve"
    assert test.strip() == venv + 'pip install -e ".[dev]" && pytest'


def test_the_ci_gate_commands_pass_on_this_repository(tmp_path: Path) -> None:
    """The README's SLO gate, run as a shell would in a copy of the repository."""
    [gate] = [b for b in bash_blocks(README.read_text(encoding="utf-8")) if "sloguard check" in b]
    for part in ("examples", "state"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("*.sqlite3*"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", gate],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary == "3 ok: PASS", result.stdout
    assert (tmp_path / "test-results" / "metrics.yml").is_file()


def test_test_results_are_not_committed() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "test-results/metrics.yml"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


async def test_the_fastapi_quick_start_serves_the_api_and_the_dashboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [quick_start] = python_blocks(README.read_text(encoding="utf-8"))
    assert len(quick_start.splitlines()) <= 20
    shutil.copytree(ROOT / "state", tmp_path / "state", ignore=shutil.ignore_patterns("*.sqlite3*"))
    monkeypatch.chdir(tmp_path)  # its paths are relative, as in a clone
    namespace: dict[str, Any] = {}
    exec(compile(quick_start, "README.md", "exec"), namespace)
    transport = httpx.ASGITransport(app=namespace["app"])
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        work = await client.post("/route/convert/document_to_pdf")
        status = await client.get("/slo", follow_redirects=True)
        one = await client.get("/slo/convert:document_to_pdf")
        page = await client.get("/slo/ui")
        history = await client.get("/slo/history?capability=convert:document_to_pdf")
    assert work.json() == {"capability": "convert:document_to_pdf"}
    assert len(status.json()["capabilities"]) == 3
    assert one.json()["requests"] == 1
    assert page.status_code == 200
    assert history.status_code == 200
