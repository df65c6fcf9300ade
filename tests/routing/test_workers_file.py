"""state/workers.yml: static workers, and errors naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from sloguard.exceptions import WorkersFileError
from sloguard.routing import create_controller_app, load_workers_file
from tests.servers import serving

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_file_lists_no_workers() -> None:
    assert load_workers_file(ROOT / "state" / "workers.yml") == ()


def test_a_missing_or_empty_file_lists_no_workers(tmp_path: Path) -> None:
    assert load_workers_file(tmp_path / "workers.yml") == ()
    (tmp_path / "workers.yml").write_text("# nothing yet\n")
    assert load_workers_file(tmp_path / "workers.yml") == ()


def test_workers_are_read(tmp_path: Path) -> None:
    path = tmp_path / "workers.yml"
    path.write_text(
        "workers:\n"
        "  - id: pdf-1\n"
        "    url: http://127.0.0.1:9001/\n"
        "    capabilities: [convert:document_to_pdf, classify:email]\n"
    )
    [worker] = load_workers_file(path)
    assert (worker.id, worker.url) == ("pdf-1", "http://127.0.0.1:9001")
    assert worker.capabilities == ["convert:document_to_pdf", "classify:email"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "workers:\n  - {id: a, url: 127.0.0.1:9001, capabilities: [a:b]}\n",
            "workers[0].url: must start with http:// or https://",
        ),
        (
            "workers:\n  - {id: a, url: 'http://x', capabilities: [a:b]}\n"
            "  - {id: b, url: 'http://y', capabilities: [nope]}\n",
            "workers[1].capabilities[0]: 'nope' is not verb:name",
        ),
        ("workers:\n  - {id: a, url: 'http://x'}\n", "workers[0].capabilities: field required"),
        (
            "workers:\n  - {id: a, url: 'http://x', capabilities: [a:b], weight: 2}\n",
            "workers[0].weight: extra inputs are not permitted",
        ),
        (
            "workers:\n  - {id: a, url: 'http://x', capabilities: [a:b]}\n"
            "  - {id: a, url: 'http://y', capabilities: [a:b]}\n",
            "workers[1].id: duplicate id 'a' (first at workers[0])",
        ),
        (
            "workers:\n  - {id: a, url: 'http://127.0.0.1:99999', capabilities: [a:b]}\n",
            "workers[0].url: port must be a number from 1 to 65535",
        ),
        (
            "workers:\n  - {id: a, url: 'http://u:pw@x', capabilities: [a:b]}\n",
            "workers[0].url: must not contain user info (user:password@)",
        ),
        ("worker: []\n", "worker: extra inputs are not permitted"),
        ("- a\n", "expected a mapping with 'workers', got list"),
    ],
)
def test_a_bad_entry_names_the_file_and_the_field(tmp_path: Path, text: str, line: str) -> None:
    path = tmp_path / "workers.yml"
    path.write_text(text)
    with pytest.raises(WorkersFileError) as info:
        load_workers_file(path)
    assert f"{path}: {line}" in str(info.value).splitlines()


def test_the_controller_refuses_to_start_on_a_bad_file(tmp_path: Path) -> None:
    (tmp_path / "workers.yml").write_text("workers: [{id: a}]\n")
    with pytest.raises(WorkersFileError, match=r"workers\.yml: workers\[0\]\.url: field required"):
        create_controller_app(tmp_path)


def test_static_workers_replace_the_demo_workers(tmp_path: Path) -> None:
    (tmp_path / "workers.yml").write_text(
        "workers: [{id: a, url: 'http://127.0.0.1:1', capabilities: [a:b]}]\n"
    )
    listed = create_controller_app(tmp_path).state.controller.registry.snapshot()
    assert [(w["id"], w["static"]) for w in listed] == [("a", True)]


def test_with_no_static_workers_there_is_one_demo_worker_per_slo() -> None:
    app = create_controller_app(ROOT / "state", health_interval_s=None)
    with serving(app):  # demo workers serve on loopback ports from the lifespan on
        workers = list(app.state.controller.registry)
    served = sorted(c for w in workers for c in w.capabilities)
    assert served == ["classify:email", "convert:document_to_pdf", "example:capability"]
    assert all(w.url.startswith("http://127.0.0.1:") and w.static for w in workers)
