"""Capability resolution helpers: the route table and /route/{verb}/{name}."""

from __future__ import annotations

import pytest

from sloguard.capability import RouteTable, capability_from_path, read_seed_body
from sloguard.exceptions import ConfigurationError


def test_the_first_matching_pattern_wins() -> None:
    table = RouteTable(
        [
            ("/documents/{id}/pdf", "convert:document_to_pdf"),
            ("/documents/{rest:path}", "store:document"),
        ]
    )
    assert table.match("/documents/42/pdf") == "convert:document_to_pdf"
    assert table.match("/documents/42/pdf/extra") == "store:document"
    assert table.match("/elsewhere") is None
    assert len(table) == 2


def test_answers_are_remembered_but_the_memo_is_bounded() -> None:
    table = RouteTable({"/items/{id}": "create:item"})
    for i in range(RouteTable.MEMO_SIZE + 500):
        assert table.match(f"/items/{i}") == "create:item"
        assert table.match(f"/other/{i}") is None
    assert len(table._memo) == RouteTable.MEMO_SIZE
    assert table.match("/items/1") == "create:item"  # remembered
    assert table.match(f"/items/{RouteTable.MEMO_SIZE + 499}") == "create:item"  # computed


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ({"items": "create:item"}, "must start with '/'"),
        ({"/items": "create item"}, "not verb:name"),
    ],
)
def test_bad_route_tables_are_refused(routes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RouteTable(routes)


@pytest.mark.parametrize(
    ("path", "capability"),
    [
        ("/route/convert/document_to_pdf", "convert:document_to_pdf"),
        ("/route/convert", None),
        ("/route/convert/a/b", None),
        ("/route//x", None),
        ("/route/con vert/x", None),
        ("/items", None),
    ],
)
def test_capability_from_path(path: str, capability: str | None) -> None:
    assert capability_from_path(path) == capability


def test_a_seed_body_is_read_leniently() -> None:
    seed = read_seed_body(b'{"verb": "classify", "capability": "email", "priority": "HIGH"}')
    assert (seed.capability, seed.priority) == ("classify:email", "HIGH")
    assert read_seed_body(b"not json").capability is None
    assert read_seed_body(b'{"verb": 1, "capability": "x"}').capability is None
    assert read_seed_body(b"[" * 100_000 + b"]" * 100_000).capability is None  # too deep
