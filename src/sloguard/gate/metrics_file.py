"""Reading and writing the metrics file that ``sloguard check`` judges.

Three formats: JSON or YAML ``{capability: {p50_ms, p95_ms, p99_ms, availability,
requests}}`` (what the pytest plugin writes; JSON Schema in
``docs/metrics.schema.json``), or a Prometheus text exposition (a saved scrape
of ``/metrics``, see :mod:`sloguard.gate.exposition`). Every error is a
:class:`MetricsFileError` naming the file and, when there is one, the field.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from sloguard.exceptions import MetricsFileError
from sloguard.gate.exposition import parse_exposition
from sloguard.gate.measured import Measured, MetricsDocument
from sloguard.slo.yamlfile import YAMLDocumentError, parse_yaml, validation_problems

MetricsFormat = Literal["auto", "json", "yaml", "prometheus"]
METRICS_FORMATS: tuple[MetricsFormat, ...] = ("auto", "json", "yaml", "prometheus")

# A saved scrape always has these comment lines (prometheus-client writes them).
_EXPOSITION_MARK = re.compile(r"^# (HELP|TYPE) \S", re.MULTILINE)
_SUFFIXES: dict[str, MetricsFormat] = {
    ".json": "json",
    ".yml": "yaml",
    ".yaml": "yaml",
    ".prom": "prometheus",
}


def read_metrics_file(
    path: str | os.PathLike[str], metrics_format: MetricsFormat = "auto"
) -> dict[str, Measured]:
    """The measurements per capability in ``path``.

    ``auto`` goes by the suffix (``.json``, ``.yml``/``.yaml``, ``.prom``), else by
    the content: ``{`` first is JSON, ``# HELP``/``# TYPE`` lines are an exposition,
    a YAML mapping is YAML. Raises :class:`MetricsFileError`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MetricsFileError(path, (("", f"cannot read file: {exc}"),)) from exc
    if not text.strip():
        raise MetricsFileError(path, (("", "file is empty"),))
    if metrics_format == "auto":
        metrics_format = _detect(path, text)
    if metrics_format == "prometheus":
        return _exposition(text, path)
    data = _json(text, path) if metrics_format == "json" else _yaml(text, path)
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise MetricsFileError(
            path, (("", f"expected a mapping of capability to measurements, got {kind}"),)
        )
    try:
        return dict(MetricsDocument.model_validate(data).root)
    except ValidationError as exc:
        raise MetricsFileError(path, validation_problems(exc)) from exc


def write_metrics_file(path: str | os.PathLike[str], measured: Mapping[str, Measured]) -> None:
    """Write ``measured`` as YAML when ``path`` ends in ``.yml``/``.yaml``, else JSON;
    the file is replaced whole (written aside, then renamed)."""
    path = Path(path)
    data = {key: measured[key].model_dump(exclude_none=True) for key in sorted(measured)}
    if path.suffix in (".yml", ".yaml"):
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _detect(path: Path, text: str) -> MetricsFormat:
    by_suffix = _SUFFIXES.get(path.suffix.lower())
    if by_suffix is not None:
        return by_suffix
    if text.lstrip().startswith("{"):
        return "json"
    if _EXPOSITION_MARK.search(text):
        return "prometheus"
    try:
        data = parse_yaml(text)
    except YAMLDocumentError:
        data = None
    if isinstance(data, dict):
        return "yaml"
    raise MetricsFileError(
        path,
        (
            (
                "",
                "unknown format: neither JSON, YAML {capability: {...}} nor a Prometheus "
                "text exposition (# HELP / # TYPE lines); pass --metrics-format",
            ),
        ),
    )


def _json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise MetricsFileError(path, (("", f"invalid JSON: {where}: {exc.msg}"),)) from exc


def _yaml(text: str, path: Path) -> Any:
    try:
        return parse_yaml(text)
    except YAMLDocumentError as exc:
        raise MetricsFileError(path, exc.problems) from exc


def _exposition(text: str, path: Path) -> dict[str, Measured]:
    try:
        return parse_exposition(text, path)
    except MetricsFileError as exc:
        line = _first_bad_line(text)
        if line is None:
            raise
        raise MetricsFileError(path, (("", f"{exc.problems[0][1]} (line {line})"),)) from exc


def _first_bad_line(text: str) -> int | None:
    """The number of the first line the exposition parser refuses (its own errors
    do not say which), or None."""
    for number, line in enumerate(text.splitlines(), 1):
        try:
            for _ in text_string_to_metric_families(line + "\n"):
                pass
        except ValueError:
            return number
    return None
