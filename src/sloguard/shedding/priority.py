"""Request priorities: ``critical``, ``high``, ``normal``, ``low``."""

from __future__ import annotations

from typing import get_args

from sloguard.slo.schema import Priority

PRIORITIES: tuple[Priority, ...] = get_args(Priority)
"""Most important first."""

DEFAULT_PRIORITY: Priority = "normal"

_BY_NAME: dict[str | bytes, Priority] = {}
for _name in PRIORITIES:
    _BY_NAME[_name] = _name
    _BY_NAME[_name.encode()] = _name


def parse_priority(raw: str | bytes | None) -> Priority:
    """The priority a header or body field names, case-insensitively and ignoring
    surrounding spaces; ``normal`` when it is missing or names no priority."""
    if raw is None:
        return DEFAULT_PRIORITY
    found = _BY_NAME.get(raw)  # the common case: already lower-case and trimmed
    if found is None:
        found = _BY_NAME.get(raw.strip().lower(), DEFAULT_PRIORITY)
    return found
