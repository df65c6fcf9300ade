"""Fixtures shared by every test module: clocks, stores and in-process clients."""

from __future__ import annotations

import pytest

from sloguard._clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
