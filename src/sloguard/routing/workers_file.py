"""``state/workers.yml``: the static workers, and the JSON body of ``POST /workers``.

Both are validated by the same frozen model; a bad entry is reported with the
file (or ``request body``) and the field, e.g.
``state/workers.yml: workers[0].url: port must be a number from 1 to 65535``
(:func:`~sloguard.routing.registration.worker_url` says what a worker URL may be).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from sloguard.capability import is_capability
from sloguard.exceptions import WorkersFileError
from sloguard.routing.registration import WORKER_ID_PATTERN, worker_url


def _capability(value: str) -> str:
    if not is_capability(value):
        raise ValueError(f"{value!r} is not verb:name")
    return value


class WorkerSpec(BaseModel):
    """One worker: ``id``, base ``url``, and the ``capabilities`` (``verb:name``) it serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=200, pattern=WORKER_ID_PATTERN)]
    url: Annotated[str, AfterValidator(worker_url)]
    capabilities: Annotated[list[Annotated[str, AfterValidator(_capability)]], Field(min_length=1)]


class WorkersFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: list[WorkerSpec] = []


def validation_problems(exc: ValidationError) -> tuple[tuple[str, str], ...]:
    """``(field path, message)`` for each error: ``workers[0].url``, ``capabilities``."""
    problems = []
    for error in exc.errors():
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = error["msg"].removeprefix("Value error, ")
        problems.append((path, message[:1].lower() + message[1:]))
    return tuple(problems)


def load_workers_file(path: str | os.PathLike[str]) -> tuple[WorkerSpec, ...]:
    """The workers ``path`` lists; none when the file does not exist or lists none.

    Raises :class:`WorkersFileError` naming the file and each bad field.
    """
    path = Path(path)
    if not path.exists():
        return ()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkersFileError(path, (("", f"cannot read file: {exc}"),)) from exc
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise WorkersFileError(path, (("", f"invalid YAML: {detail}"),)) from exc
    if data is None:
        return ()
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise WorkersFileError(path, (("", f"expected a mapping with 'workers', got {kind}"),))
    if data.get("workers") is None:
        data = {**data, "workers": []}
    try:
        workers = tuple(WorkersFile.model_validate(data).workers)
    except ValidationError as exc:
        raise WorkersFileError(path, validation_problems(exc)) from exc
    seen: dict[str, int] = {}
    for index, worker in enumerate(workers):
        if worker.id in seen:
            message = f"duplicate id {worker.id!r} (first at workers[{seen[worker.id]}])"
            raise WorkersFileError(path, ((f"workers[{index}].id", message),))
        seen[worker.id] = index
    return workers
