"""Reading SLO files and directories into :class:`SLOFile` models, reporting what fails.

Loading never stops at the first bad file: every error is collected as an
:class:`SLOFileError` naming the file and the field, and every good file loads.
This module is also what ``sloguard validate DIR`` reuses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sloguard.exceptions import ConfigurationError, SLOFileError
from sloguard.slo.schema import SLOFile
from sloguard.slo.tiers import TierTable, read_tiers, tiers_path_for
from sloguard.slo.yamlfile import YAMLDocumentError, parse_yaml, validation_problems

SLO_FILE_SUFFIXES = (".yml", ".yaml")


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
        except Exception as exc:  # one file that breaks the loader never stops the others
            errors.append(SLOFileError(path, (("", f"cannot load: {type(exc).__name__}: {exc}"),)))
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
