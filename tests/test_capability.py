"""Capability resolution helpers: the route table and /route/{verb}/{name}."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sloguard.capability import RouteTable, capability_from_path, is_capability, read_seed_body
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


SEED_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, derandomize=True, database=None)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.builds(lambda v: json.dumps(v).encode(), SEED_VALUES),
        st.builds(
            lambda fields: json.dumps(
                {"verb": "convert", "capability": "pdf", **fields}, ensure_ascii=False
            ).encode("utf-8", "surrogatepass"),
            st.dictionaries(st.sampled_from(["priority", "idempotency_key", "verb"]), SEED_VALUES),
        ),
        st.integers(min_value=1, max_value=50_000).map(lambda n: b"[" * n + b"]" * n),
    )
)
def test_any_seed_body_is_read_without_raising(body: bytes) -> None:
    seed = read_seed_body(body)
    assert seed.capability is None or is_capability(seed.capability)
    assert seed.priority is None or isinstance(seed.priority, str)
