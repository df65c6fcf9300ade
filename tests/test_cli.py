"""The ``sloguard`` command: version, validate, and serve and worker as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from sloguard import __version__
from sloguard.cli import main
from sloguard.routing import WorkerRegistry, create_controller_app
from tests.servers import free_port, serving

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sloguard {__version__}"


def test_the_console_script_is_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from sloguard.cli import main; raise SystemExit(main(['-h']))"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "usage: sloguard" in result.stdout
    for command in ("serve", "worker", "validate", "check", "rules", "dashboard", "demo"):
        assert command in result.stdout


STATE_SLOS = Path(__file__).resolve().parents[1] / "state" / "controller" / "slos"


@pytest.mark.parametrize("command", ["rules", "dashboard"])
def test_generators_print_for_every_slo_file(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, str(STATE_SLOS)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    if command == "rules":
        groups = yaml.safe_load(captured.out)["groups"]
        names = [g["name"] for g in groups]
    else:
        panels = json.loads(captured.out)["panels"]
        names = [f"sloguard:{p['title']}" for p in panels if p["type"] == "row"][:-1]
    assert names == [
        "sloguard:classify:email",
        "sloguard:convert:document_to_pdf",
        "sloguard:example:capability",
    ]


@pytest.mark.parametrize("command", ["rules", "dashboard"])
def test_a_missing_directory_is_named(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    assert main([command, str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(missing) in captured.err


@pytest.mark.parametrize("command", ["rules", "dashboard"])
def test_a_bad_file_is_named_with_its_field_and_nothing_is_printed(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.yml").write_text((STATE_SLOS / "classify_email.yml").read_text())
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "capability: {verb: a, name: b}\n"
        "slo:\n"
        "  latency: {p50_ms: 50, p95_ms: fast, p99_ms: 200}\n"
        "  availability: {target: 0.99}\n"
    )
    assert main([command, str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # half a rule file would silently drop a capability's alerts
    assert str(bad) in captured.err
    assert "slo.latency.p95_ms" in captured.err


def test_an_empty_directory_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", str(tmp_path)]) == 1
    assert "no SLO files" in capsys.readouterr().err


def test_validate_passes_the_shipped_slos(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "state" / "controller" / "slos")]) == 0
    assert capsys.readouterr().out.startswith("3 valid, 0 invalid SLO files")


def test_validate_prints_each_error_with_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = (ROOT / "state" / "controller" / "slos" / "classify_email.yml").read_text()
    (tmp_path / "good.yml").write_text(good)
    (tmp_path / "bad.yml").write_text(good.replace("p95_ms: 60", "p95_ms: -1"))
    (tmp_path / "worse.yaml").write_text("capability: [\n")

    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr()
    errors = out.err.splitlines()
    assert any(e.startswith(f"{tmp_path / 'bad.yml'}: slo.latency.p95_ms: ") for e in errors)
    assert any(e.startswith(f"{tmp_path / 'worse.yaml'}: invalid YAML") for e in errors)
    assert out.out.startswith("1 valid, 2 invalid SLO files")


def test_validate_a_missing_path_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == (
        f"sloguard validate: no such file or directory: {tmp_path / 'nope'}\n"
    )


def test_validate_a_directory_without_slo_files_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"sloguard validate: no SLO files (*.yml, *.yaml) in {tmp_path}\n"
    )


def test_validate_one_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shipped = ROOT / "state" / "controller" / "slos" / "classify_email.yml"
    assert main(["validate", str(shipped)]) == 0
    assert capsys.readouterr().out == f"1 valid, 0 invalid SLO files in {shipped}\n"
    bad = tmp_path / "bad.yml"
    bad.write_text(shipped.read_text().replace("target: 0.995", "target: 99.5"))
    assert main(["validate", str(bad)]) == 1
    assert "did you mean 0.995?" in capsys.readouterr().err


def test_validate_a_state_directory_reads_its_slos_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """workers.yml and alerts.yml sit beside the SLO files: they are not SLO files."""
    for path in (ROOT / "state", ROOT / "state" / "controller"):
        assert main(["validate", str(path)]) == 0
        captured = capsys.readouterr()
        assert captured.err == ""
        slos = ROOT / "state" / "controller" / "slos"
        assert captured.out == f"3 valid, 0 invalid SLO files in {slos}\n"


def test_sloguard_alone_prints_its_commands_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    help_text = capsys.readouterr().err
    assert help_text.startswith("usage: sloguard")
    assert "validate" in help_text


def sloguard(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``sloguard ARGS`` in the repository; ``env``: variables set on top of this one's."""
    code = "import sys; from sloguard.cli import main; raise SystemExit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else {**os.environ, **env},
    )


@contextlib.contextmanager
def stopped_at_exit(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def wait_until_answering(url: str, process: subprocess.Popen[str]) -> None:
    for _ in range(300):
        assert process.poll() is None, "the process exited"
        with contextlib.suppress(httpx.TransportError):
            httpx.get(url, timeout=1)
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} never answered")


def test_serve_answers_the_readme_curl_with_the_demo_workers() -> None:
    port = free_port()
    with stopped_at_exit(sloguard("serve", "--port", str(port))) as process:
        assert process.stderr is not None
        first_line = process.stderr.readline()
        base = f"http://127.0.0.1:{port}"
        wait_until_answering(base + "/healthz", process)
        response = httpx.post(base + "/route/convert/document_to_pdf", content=b"{}")
        seed = httpx.post(
            base + "/route",
            json={"verb": "classify", "capability": "email", "request_payload": {"x": 1}},
        )
        missing = httpx.post(base + "/route", json={"verb": "classify"})
        metrics = httpx.get(base + "/metrics/").text
        slo = httpx.get(base + "/slo").json()

    assert first_line.startswith(f"sloguard serve: listening on {base} with 3 SLOs")
    assert "3 workers" in first_line
    assert first_line.rstrip().endswith(
        "; registry token in state/registry.token; API token off"  # no token given here
    )
    assert response.status_code == 200
    assert response.json()["capability"] == "convert:document_to_pdf"
    assert seed.status_code == 200
    assert missing.status_code == 400
    assert missing.json()["detail"] == "capability: field required"
    labels = 'capability="convert:document_to_pdf",outcome="ok",priority="normal"'
    assert f"sloguard_requests_total{{{labels}}} 1.0" in metrics
    assert {c["capability"] for c in slo["capabilities"]} == {
        "convert:document_to_pdf",
        "classify:email",
        "example:capability",
    }


def test_serve_with_tracing_prints_spans_with_sloguards_attributes() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with stopped_at_exit(sloguard("serve", "--port", str(port), "--tracing")) as process:
        wait_until_answering(base + "/healthz", process)
        response = httpx.post(
            base + "/route/convert/document_to_pdf", content=b"{}", headers={"X-Priority": "high"}
        )
        process.terminate()
        assert process.stderr is not None
        _, err = process.communicate(timeout=30)
    assert response.status_code == 200
    assert '"sloguard.capability": "convert:document_to_pdf"' in err
    assert '"sloguard.priority": "high"' in err
    assert '"kind": "SpanKind.CLIENT"' in err  # the forward to the demo worker


def test_serve_refuses_a_missing_state_directory(tmp_path: Path) -> None:
    process = sloguard("serve", "--state", str(tmp_path / "nope"), "--port", str(free_port()))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "state directory not found" in err


def test_a_worker_process_registers_heartbeats_and_leaves() -> None:
    registry = WorkerRegistry(heartbeat_ttl_s=30)
    app = create_controller_app(registry=registry, health_interval_s=None, registry_token="t0k")
    port = free_port()
    env = {"SLOGUARD_REGISTRY_TOKEN": "t0k"}
    with serving(app) as controller:
        args = ["--capabilities", "a:b,c:d", "--port", str(port), "--controller", controller]
        args += ["--heartbeat-s", "0.05"]
        with stopped_at_exit(sloguard("worker", *args, env=env)) as process:
            wait_until_answering(f"http://127.0.0.1:{port}/health", process)
            first_seen = None
            for _ in range(300):  # until a heartbeat follows the registration
                worker = registry.get(f"worker-{port}")
                if worker is not None and first_seen is None:
                    first_seen = worker.last_heartbeat
                elif worker is not None and worker.last_heartbeat != first_seen:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the worker never heartbeat")
            routed = httpx.post(controller + "/route/c/d", content=b"{}")
            listed = httpx.get(controller + "/workers").json()["workers"]
        left = httpx.get(controller + "/workers").json()["workers"]

    assert [(w["id"], w["capabilities"], w["healthy"]) for w in listed] == [
        (f"worker-{port}", ["a:b", "c:d"], True)
    ]
    assert routed.status_code == 200
    assert routed.json()["worker"] == f"worker-{port}"
    assert left == []  # it deregistered on shutdown


def registered(controller: str, worker_id: str, process: subprocess.Popen[str]) -> bool:
    for _ in range(300):
        assert process.poll() is None, "the worker exited"
        if worker_id in {w["id"] for w in httpx.get(controller + "/workers").json()["workers"]}:
            return True
        time.sleep(0.05)
    return False


def test_a_worker_registers_with_the_token_serve_wrote_and_without_it_is_refused(
    tmp_path: Path,
) -> None:
    port, good, bad = free_port(), free_port(), free_port()
    controller = f"http://127.0.0.1:{port}"
    token_file = tmp_path / "registry.token"
    common = ["--capabilities", "a:b", "--controller", controller, "--heartbeat-s", "0.05"]
    no_tokens = {"SLOGUARD_REGISTRY_TOKEN": "", "SLOGUARD_API_TOKEN": ""}
    serve = sloguard("serve", "--state", str(tmp_path), "--port", str(port), env=no_tokens)
    with stopped_at_exit(serve) as server:
        assert server.stderr is not None
        first_line = server.stderr.readline()
        wait_until_answering(controller + "/healthz", server)
        mode = token_file.stat().st_mode & 0o777
        worker = sloguard(
            "worker", *common, "--port", str(good), "--token-file", str(token_file), env=no_tokens
        )
        intruder = sloguard(
            "worker", *common, "--port", str(bad), "--id", "intruder", "--token", "guess"
        )
        with stopped_at_exit(worker) as process, stopped_at_exit(intruder) as refused:
            assert registered(controller, f"worker-{good}", process)
            routed = httpx.post(controller + "/route/a/b", content=b"{}")
            assert refused.stderr is not None
            refusal = refused.stderr.readline() + refused.stderr.readline()
            listed = httpx.get(controller + "/workers").json()["workers"]

    assert f"; registry token in {token_file}; API token off" in first_line
    assert mode == 0o600
    assert routed.status_code == 200
    assert routed.json()["worker"] == f"worker-{good}"
    assert [w["id"] for w in listed] == [f"worker-{good}"]
    assert f"{controller} refused the registration (401): registry writes need" in refusal


# -- sloguard check ----------------------------------------------------------------

MEASURED = {
    "convert:document_to_pdf": {
        "p50_ms": 20,
        "p95_ms": 80,
        "p99_ms": 150,
        "availability": 0.9995,
        "requests": 100,
    },
    "classify:email": {
        "p50_ms": 5,
        "p95_ms": 30,
        "p99_ms": 60,
        "availability": 1.0,
        "requests": 50,
    },
    "example:capability": {"p50_ms": 50, "p95_ms": 90, "p99_ms": 99, "requests": 20},
}


def check(tmp_path: Path, metrics: object, *args: str, name: str = "metrics.json") -> int:
    path = tmp_path / name
    if isinstance(metrics, str):
        path.write_text(metrics, encoding="utf-8")
    else:
        path.write_text(json.dumps(metrics), encoding="utf-8")
    return main(["check", "--slos", str(STATE_SLOS), "--metrics", str(path), *args])


def test_check_exits_0_when_every_capability_complies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(tmp_path, MEASURED) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("3 ok: PASS")


def test_check_exits_1_on_a_violation_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slow = {**MEASURED, "classify:email": {**MEASURED["classify:email"], "p95_ms": 250}}
    assert check(tmp_path, slow) == 1
    out = capsys.readouterr().out
    assert "  classify:email: p95 latency 250ms > target 60ms" in out
    assert out.rstrip().endswith("1 violated, 2 ok: FAIL")


def test_check_reads_the_yaml_the_plan_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(tmp_path, yaml.safe_dump(MEASURED), name="metrics.yml") == 0
    assert capsys.readouterr().out.rstrip().endswith("3 ok: PASS")


def test_insufficient_data_passes_unless_asked_to_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    few = {"classify:email": {**MEASURED["classify:email"], "requests": 3}}
    assert check(tmp_path, few) == 0
    assert "insufficient data (3 < 20 requests)" in capsys.readouterr().out
    assert check(tmp_path, few, "--fail-on-insufficient-data") == 1
    assert check(tmp_path, few, "--min-requests", "3") == 0
    assert "classify:email           3" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("report_format", "parse"),
    [("json", json.loads), ("junit", ET.fromstring), ("text", str.splitlines)],
)
def test_check_writes_the_report_to_output(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    report_format: str,
    parse: Callable[[str], object],
) -> None:
    output = tmp_path / "report"
    assert check(tmp_path, MEASURED, "--format", report_format, "--output", str(output)) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "3 ok: PASS"
    assert parse(output.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("metrics", "name", "message"),
    [
        ("{not json", "metrics.json", "metrics.json: invalid JSON: line 1, column 2"),
        ('{"a:b": {"requests": "many"}}', "metrics.json", "metrics.json: a:b.requests: "),
        ("a:b: {requests: 1, p95_ms: []}\n", "metrics.yml", "metrics.yml: a:b.p95_ms: "),
        ("hello\n", "metrics.out", "metrics.out: unknown format"),
        ("# TYPE x counter\nx 1\n", "scrape.prom", "scrape.prom: no sloguard_request"),
    ],
)
def test_check_exits_2_on_bad_metrics_naming_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], metrics: str, name: str, message: str
) -> None:
    assert check(tmp_path, metrics, name=name) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"sloguard check: {tmp_path / name}" in captured.err
    assert message in captured.err


def test_check_exits_2_on_an_unreadable_metrics_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.json"
    assert main(["check", "--slos", str(STATE_SLOS), "--metrics", str(missing)]) == 2
    assert f"{missing}: cannot read file" in capsys.readouterr().err


def test_check_exits_2_on_bad_slo_files_with_validates_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slos = tmp_path / "slos"
    slos.mkdir()
    good = (STATE_SLOS / "classify_email.yml").read_text()
    (slos / "bad.yml").write_text(good.replace("p95_ms: 60", "p95_ms: -1"))
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps(MEASURED))

    assert main(["check", "--slos", str(slos), "--metrics", str(metrics)]) == 2
    check_err = capsys.readouterr().err
    assert main(["validate", str(slos)]) == 1
    validate_err = capsys.readouterr().err
    assert validate_err.strip() in check_err  # the same loader, the same lines
    assert f"{slos / 'bad.yml'}: slo.latency.p95_ms: " in check_err

    assert main(["check", "--slos", str(tmp_path / "none"), "--metrics", str(metrics)]) == 2
    assert "SLO directory not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["check", "--slos", str(empty), "--metrics", str(metrics)]) == 2
    assert "no SLO files" in capsys.readouterr().err


def test_check_refuses_an_unknown_report_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        check(tmp_path, MEASURED, "--format", "html")
    assert exit_info.value.code == 2
    assert "invalid choice: 'html'" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "soon", "inf"])
def test_serve_refuses_a_bad_breach_timing(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--open-after", value])
    assert exited.value.code == 2
    assert "--open-after" in capsys.readouterr().err
