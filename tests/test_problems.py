"""RFC 9457 problem details: their shape, their resolvable ``type``, and a documented
section for every ``error`` the code can answer."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest
import yaml
from starlette.types import Message

from sloguard import ConfigurationError
from sloguard.exceptions import RegistrationRefused
from sloguard.problems import (
    DEFAULT_PROBLEM_BASE,
    DOCS_SITE_URL,
    PROBLEM_BASE_ENV,
    problem_body,
    problem_type,
    send_problem,
    set_problem_base,
)
from sloguard.shedding.limiter import RefusalReason

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "sloguard"

# The calls that make a problem, and which positional argument is its ``error``.
_MAKERS = {
    "problem_reply": 1,
    "problem_body": 1,
    "send_problem": 2,
    "Problem": 1,
    "_bad_request": 0,
}


def _refusals(cls: type[RegistrationRefused]) -> tuple[str, ...]:
    """The ``error`` of every registration refusal raised (the subclasses; the base is not)."""
    return tuple(e for sub in cls.__subclasses__() for e in (sub.error, *_refusals(sub)))


# Calls whose ``error`` is not a literal: each passes on one made elsewhere (scanned
# there), or names its values here. A new one fails the test until it is listed.
_DYNAMIC = {
    ("problems.py", "error"): (),
    ("problems.py", "self.error"): (),
    ("routing/app.py", "error"): (),  # _bad_request(error, ...): its callers pass literals
    ("routing/app.py", "exc.error"): _refusals(RegistrationRefused),
    ("shedding/admission.py", "refusal.reason"): get_args(RefusalReason),
}


@pytest.fixture(autouse=True)
def _default_base() -> Iterator[None]:
    yield
    set_problem_base(None)


def emitted_errors() -> set[str]:
    """Every ``error`` a problem made anywhere in src/ can carry."""
    errors: set[str] = set()
    for path in sorted(SRC.rglob("*.py")):
        where = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name not in _MAKERS or len(node.args) <= _MAKERS[name]:
                continue
            arg = node.args[_MAKERS[name]]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                errors.add(arg.value)
                continue
            key = (where, ast.unparse(arg))
            assert key in _DYNAMIC, f"{where}:{node.lineno}: {name}() with error {key[1]}"
            errors.update(_DYNAMIC[key])
    return errors


def documented_errors() -> list[str]:
    text = (ROOT / "docs" / "problems.md").read_text(encoding="utf-8")
    return re.findall(r"^### ([a-z_]+)$", text, re.MULTILINE)


def test_a_problem_document_carries_the_standard_members_and_extras() -> None:
    document = json.loads(problem_body(503, "slo_violation", "Shed", "Too slow.", violations=["a"]))
    assert document == {
        "type": "https://sloguard.readthedocs.io/en/latest/problems/#slo_violation",
        "title": "Shed",
        "status": 503,
        "detail": "Too slow.",
        "error": "slo_violation",
        "violations": ["a"],
    }


async def test_send_problem_sends_a_complete_response() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await send_problem(send, 409, "conflict", "Conflict", "Busy.", headers=[(b"retry-after", b"1")])

    start, body = sent
    assert start["status"] == 409
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"retry-after"] == b"1"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"])["status"] == 409
    assert not body.get("more_body", False)


def test_types_point_to_the_published_docs_site() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["site_url"] == DOCS_SITE_URL
    assert DEFAULT_PROBLEM_BASE == DOCS_SITE_URL + "problems/#"
    assert problem_type("idempotency_key_reused") == (
        "https://sloguard.readthedocs.io/en/latest/problems/#idempotency_key_reused"
    )


def test_every_problem_the_code_answers_has_a_section_in_the_docs() -> None:
    emitted = emitted_errors()
    documented = documented_errors()
    assert len(emitted) > 25  # the scan found the code's problems, not nothing
    assert sorted(emitted - set(documented)) == []  # answered, but not documented
    assert sorted(set(documented) - emitted) == []  # documented, but never answered
    assert len(documented) == len(set(documented))


def test_the_base_is_configurable_for_the_whole_process() -> None:
    set_problem_base("https://docs.example.com/errors#")
    assert json.loads(problem_body(400, "x", "X", "x."))["type"] == (
        "https://docs.example.com/errors#x"
    )
    set_problem_base("urn:sloguard:problem:")
    assert problem_type("x") == "urn:sloguard:problem:x"
    set_problem_base(None)
    assert problem_type("x") == DEFAULT_PROBLEM_BASE + "x"


def test_the_base_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROBLEM_BASE_ENV, "https://errors.example.org/sloguard/")
    set_problem_base(None)
    assert problem_type("x") == "https://errors.example.org/sloguard/x"
    monkeypatch.setenv(PROBLEM_BASE_ENV, "not a uri")
    with pytest.raises(ConfigurationError, match=PROBLEM_BASE_ENV):
        set_problem_base(None)


@pytest.mark.parametrize("base", ["", "problems#", "/problems/#", " https://x.example/#", "a b:c"])
def test_a_base_that_is_not_an_absolute_uri_is_refused(base: str) -> None:
    with pytest.raises(ConfigurationError, match=r"absolute URI|must be a URI"):
        set_problem_base(base)
    assert problem_type("x") == DEFAULT_PROBLEM_BASE + "x"
