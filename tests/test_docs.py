"""The reference in docs/ builds as a site with MkDocs in strict mode, every page in its menu."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from sloguard.problems import DOCS_SITE_URL, problem_type
from tests.test_problems import emitted_errors

ROOT = Path(__file__).resolve().parents[1]


def nav_pages(nav: list[object]) -> set[str]:
    pages: set[str] = set()
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            pages |= nav_pages(value)
        else:
            pages.add(str(value))
    return pages


def test_every_page_is_in_the_menu() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert nav_pages(config["nav"]) == pages


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "guard" / "index.html").is_file()
    assert (tmp_path / "images" / "dashboard.png").is_file()
    # Every problem type resolves: its URL's anchor is on the built page.
    page = (tmp_path / "problems" / "index.html").read_text(encoding="utf-8")
    for error in emitted_errors():
        assert problem_type(error) == f"{DOCS_SITE_URL}problems/#{error}"
        assert f'id="{error}"' in page, error
