"""A real headless Chromium for tests, driven by Selenium through Debian's chromedriver.

The browser is the system's (``chromium`` and ``chromium-driver``, or ``$CHROMIUM`` and
``$CHROMEDRIVER``), never one downloaded at run time. Without them the browser tests are
skipped with the reason, unless ``CI`` is set: then they fail, so that CI never passes
without having run them. ``.ci/run`` installs both packages.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.redis_server import in_ci

WAIT_S = 15.0
"""The longest a test waits for the page to show something (it polls every 2 s)."""


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when running in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: browser tests must run, not skip)", pytrace=False)
    pytest.skip(f"{reason}; apt-get install chromium chromium-driver, or run .ci/run")


def _binary(variable: str, *names: str) -> str:
    given = os.environ.get(variable)
    if given:
        if not os.access(given, os.X_OK):
            unavailable(f"${variable} names {given}, which is not an executable")
        return given
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    unavailable(f"{names[0]} is not installed (nor named by ${variable})")


def start_chromium(width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium session (a ``selenium.webdriver.Chrome``); quit it when done."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("CHROMIUM", "chromium", "chromium-browser")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=_binary("CHROMEDRIVER", "chromedriver"))
    try:
        return webdriver.Chrome(service=service, options=options)
    except WebDriverException as exc:
        unavailable(f"Chromium did not start: {exc.msg}")


def wait_until(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    """What ``condition(driver)`` returns once truthy; fails naming ``what`` after WAIT_S."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition)
    except TimeoutException:
        logs = "\n".join(str(entry) for entry in driver.get_log("browser"))
        pytest.fail(f"the page never showed {what} within {WAIT_S} s; browser log:\n{logs}")


def screenshot(driver: Any, path: Path) -> Path:
    """Save a PNG of the window; with $SLOGUARD_SCREENSHOTS set, a copy goes there too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    extra = os.environ.get("SLOGUARD_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(extra) / path.name)
    return path
