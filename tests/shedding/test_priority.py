from __future__ import annotations

import pytest

from sloguard.shedding import DEFAULT_PRIORITY, PRIORITIES, parse_priority


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"low", "low"),
        (b"LOW", "low"),
        (" High ", "high"),
        ("Critical", "critical"),
        (b"normal", "normal"),
        (None, "normal"),
        (b"", "normal"),
        (b"urgent", "normal"),
        ("lowest", "normal"),
        (b"\xff", "normal"),
    ],
)
def test_priorities_are_case_insensitive_and_default_to_normal(
    raw: str | bytes | None, expected: str
) -> None:
    assert parse_priority(raw) == expected


def test_the_four_priorities_most_important_first() -> None:
    assert PRIORITIES == ("critical", "high", "normal", "low")
    assert DEFAULT_PRIORITY == "normal"
