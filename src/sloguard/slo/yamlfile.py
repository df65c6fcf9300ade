"""Parsing YAML documents strictly, and naming the field each validation error is in.

Shared by every YAML file sloguard reads (SLO files, tiers, alerts, metrics files).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml
from pydantic import ValidationError

try:  # the C parser is ~10x faster; 10,000 files should load in seconds
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


class _DuplicateKeys(Exception):
    """Raised by the loader with one ``(field path, message)`` per repeated key."""

    def __init__(self, problems: tuple[tuple[str, str], ...]) -> None:
        super().__init__(problems)
        self.problems = problems


class _StrictSafeLoader(_SafeLoader):
    """A safe loader that refuses a mapping with a key twice (PyYAML keeps the last one).

    The check walks the composed document before anything is constructed:
    there the path of every node is known, and a ``<<`` merge has not yet
    mixed merged keys into a mapping (a key written after ``<<: *anchor``
    overrides the merged one; that is not a duplicate).
    """

    def construct_document(self, node: yaml.Node) -> Any:
        problems = tuple(_duplicate_keys(node, "", set()))
        if problems:
            raise _DuplicateKeys(problems)
        return super().construct_document(node)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _duplicate_keys(node: yaml.Node, path: str, seen: set[int]) -> Iterator[tuple[str, str]]:
    """``(field path, message)`` for each key of a mapping under ``node`` that repeats one."""
    if id(node) in seen:  # an alias: already walked (and anchors may be recursive)
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{path}[{index}]", seen)
    elif isinstance(node, yaml.MappingNode):
        first_lines: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            field = f"{path}.{name}" if path else name
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                # Tags are resolved by now: `p95_ms` and "p95_ms" are one key.
                key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
                if key in first_lines:
                    yield field, f"duplicate key (line {line}, first on line {first_lines[key]})"
                else:
                    first_lines[key] = line
            yield from _duplicate_keys(value_node, field, seen)


class YAMLDocumentError(ValueError):
    """YAML text that does not parse or repeats a key; ``problems`` pairs a field
    path (empty for the document as a whole) with what is wrong there."""

    def __init__(self, problems: tuple[tuple[str, str], ...]) -> None:
        super().__init__(problems)
        self.problems = problems


def parse_yaml(text: str) -> Any:
    """Parse one YAML document into plain data (a safe loader), refusing repeated keys;
    raise :class:`YAMLDocumentError` otherwise."""
    try:
        return yaml.load(text, Loader=_StrictSafeLoader)
    except yaml.YAMLError as exc:
        raise YAMLDocumentError((("", f"invalid YAML: {_one_line(exc)}"),)) from exc
    except _DuplicateKeys as exc:
        raise YAMLDocumentError(exc.problems) from None
    except (ValueError, OverflowError, RecursionError) as exc:
        # A scalar that parses but cannot be built: an integer of 5,000 digits, the
        # date 2025-13-45, a time zone offset of -99:00.
        raise YAMLDocumentError((("", f"invalid YAML value: {exc}"),)) from exc


def validation_problems(exc: ValidationError) -> tuple[tuple[str, str], ...]:
    """One ``(field path, message)`` per error of a pydantic validation."""
    return tuple((_field_path(e["loc"]), _message(e["msg"])) for e in exc.errors())


def _field_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic ``loc`` as a field path: ``slo.error_budget.alerts[1].channel``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _message(msg: str) -> str:
    # Our own validators' messages are complete sentences; pydantic's prefix adds nothing.
    return msg.removeprefix("Value error, ")


def _one_line(exc: yaml.YAMLError) -> str:
    """``line 2, column 1: did not find expected ',' or '}' (while parsing a flow mapping)``."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        text = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
        return f"{text} ({exc.context})" if exc.context else text
    return " ".join(str(exc).split())
