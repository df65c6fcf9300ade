"""Run by .ci/run in a fresh virtualenv where sloguard is installed from dist/ (not editable):
the installed package serves /slo/ui and its files from package data."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx

import sloguard
from sloguard.reporting import Reporter, SLOApp
from sloguard.slo.manager import SLOManager


async def main(where: Path) -> None:
    assert "site-packages" in where.parts, f"sloguard imported from {where}, not an install"
    app = SLOApp(Reporter(SLOManager(None)), token="")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as c:
        page, script, style = [
            await c.get(p) for p in ("/ui", "/ui/dashboard.js", "/ui/dashboard.css")
        ]
    for response in (page, script, style):
        assert response.status_code == 200, (response.request.url, response.status_code)
    assert "dashboard.js" in page.text
    assert "new WebSocket(" in script.text
    print(f"sloguard {sloguard.__version__} from {where.parent}: /slo/ui served from package data")


if __name__ == "__main__":
    asyncio.run(main(Path(sloguard.__file__).resolve()))
    sys.exit(0)
