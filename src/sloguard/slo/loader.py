"""Reading SLO files and directories into :class:`SLOFile` models, reporting what fails.

Loading never stops at the first bad file: every error is collected as an
:class:`SLOFileError` naming the file and the field, and every good file loads.
This module is also what ``sloguard validate DIR`` reuses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sloguard.exceptions import ConfigurationError, SLOFileError
from sloguard.slo.schema import SLOFile
from sloguard.slo.tiers import TierTable, read_tiers, tiers_path_for

SLO_FILE_SUFFIXES = (".yml", ".yaml")

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


def load_slo_file(path: str | os.PathLike[str], tiers: TierTable | None = None) -> SLOFile:
    """Read and validate one SLO file; raise :class:`SLOFileError` naming each bad field.

    ``tiers``: the tiers its ``tier:`` may name (default: the built-in ones).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SLOFileError(path, (("", f"cannot read file: {exc}"),)) from exc
    return parse_slo_text(text, path, tiers)


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


def validation_problems(exc: ValidationError) -> tuple[tuple[str, str], ...]:
    """One ``(field path, message)`` per error of a pydantic validation."""
    return tuple((_field_path(e["loc"]), _message(e["msg"])) for e in exc.errors())


def parse_slo_text(text: str, path: Path, tiers: TierTable | None = None) -> SLOFile:
    """Validate the YAML ``text`` of an SLO file, its tier (of ``tiers``, default the
    built-in ones) applied; ``path`` is only used in errors."""
    try:
        data = parse_yaml(text)
    except YAMLDocumentError as exc:
        raise SLOFileError(path, exc.problems) from exc
    if data is None:
        raise SLOFileError(path, (("", "file is empty"),))
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise SLOFileError(path, (("", f"expected a mapping at the top level, got {kind}"),))
    try:
        data, supplied = (tiers or TierTable()).apply(data)
    except ValueError as exc:
        raise SLOFileError(path, (("tier", str(exc)),)) from None
    try:
        return SLOFile.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc)
        if supplied:
            problems = tuple((f, _with_tier(f, m, data["tier"], supplied)) for f, m in problems)
        raise SLOFileError(path, problems) from exc


def _with_tier(field: str, message: str, tier: str, supplied: Mapping[str, Any]) -> str:
    """``message``, saying which of the tier's values take part in the bad ``field``."""
    involved = [
        f"{path}={value}"
        for path, value in supplied.items()
        if path.startswith(field + ".") or path == field or field.startswith(path + ".")
    ]
    if not involved:
        return message
    return f"{message} (tier {tier} sets {', '.join(involved)})"


def slo_file_paths(directory: str | os.PathLike[str]) -> list[Path]:
    """The SLO files of ``directory`` in name order: ``*.yml`` and ``*.yaml``, not hidden.

    Raises :class:`ConfigurationError` naming the directory when it does not exist.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigurationError(f"SLO directory not found: {directory}")
    # Dot-files are editor swap and backup files, never SLOs.
    paths = sorted(
        p
        for p in directory.iterdir()
        if p.suffix in SLO_FILE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    # A directory moved away while it was listed would look empty: say it is gone,
    # rather than let a reload drop every capability.
    if not directory.is_dir():
        raise ConfigurationError(f"SLO directory not found: {directory}")
    return paths


def load_slo_dir(
    directory: str | os.PathLike[str],
) -> tuple[dict[Path, SLOFile], list[SLOFileError]]:
    """Load every SLO file of ``directory``; return the good ones by path, and the errors.

    Tiers come from ``tiers.yml`` beside the directory (and the built-in ones); an
    invalid tiers file is one of the errors. When two files claim one capability,
    the first in name order keeps it and the other is reported with an error
    naming both files.
    """
    paths = slo_file_paths(directory)
    tiers, tiers_error = read_tiers(tiers_path_for(directory))
    parsed, errors = read_slo_files(paths, tiers)
    kept, duplicates = resolve_claims(parsed)
    return kept, ([tiers_error] if tiers_error else []) + errors + duplicates


def read_slo_files(
    paths: Iterable[Path], tiers: TierTable | None = None
) -> tuple[dict[Path, SLOFile], list[SLOFileError]]:
    """Load each path; return the valid files by path and one error per invalid file."""
    loaded: dict[Path, SLOFile] = {}
    errors: list[SLOFileError] = []
    for path in paths:
        try:
            loaded[path] = load_slo_file(path, tiers)
        except SLOFileError as exc:
            errors.append(exc)
    return loaded, errors


def resolve_claims(
    candidates: Mapping[Path, SLOFile],
    *,
    owners: Mapping[str, Path] | None = None,
    fallbacks: Mapping[Path, SLOFile] | None = None,
) -> tuple[dict[Path, SLOFile], list[SLOFileError]]:
    """Give each capability to exactly one file; report the other claimants.

    ``owners`` maps a capability to the file that held it before (a reload):
    that file keeps it. Other claims go in path order, first come first served.
    A file whose claim is refused falls back to its version in ``fallbacks``
    (its last good version) when that capability is still free.
    """
    owners = owners or {}
    fallbacks = fallbacks or {}
    claimed: dict[str, Path] = {}
    kept: dict[Path, SLOFile] = {}
    errors: list[SLOFileError] = []
    later: list[Path] = []
    for path in sorted(candidates):
        key = candidates[path].key
        if owners.get(key) == path:
            claimed[key] = path
            kept[path] = candidates[path]
        else:
            later.append(path)
    for path in later:
        slo = candidates[path]
        holder = claimed.get(slo.key)
        if holder is None:
            claimed[slo.key] = path
            kept[path] = slo
            continue
        message = f"capability {slo.key} is already defined in {holder}"
        errors.append(SLOFileError(path, (("capability", message),)))
        previous = fallbacks.get(path)
        if previous is not None and previous.key not in claimed:
            claimed[previous.key] = path
            kept[path] = previous
    return kept, errors


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
