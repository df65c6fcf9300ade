"""The pytest plugin: measure each capability during a test session, and gate on its SLO.

Registered through the ``pytest11`` entry point, so installing sloguard is
enough. Without its options it only registers the ``capability`` marker (and
``slo``, its alias):
nothing is recorded and no outcome changes.

- ``--metrics-output FILE`` records every request any SLOGuard serves during
  the session (its capability, latency by SLOGuard's clock, and outcome), plus
  the call phase of each test marked ``@pytest.mark.capability("verb:name")``
  (passed: ok; failed: error; skipped: not counted), and writes FILE at the
  end: ``{capability: {p50_ms, p95_ms, p99_ms, availability, requests, errors}}``
  (JSON, or YAML for ``.yml``/``.yaml``), the input of ``sloguard check``.
- ``--slo-dir DIR`` judges them against the SLO files of DIR in the terminal
  summary; ``--slo-enforce`` also fails the session (exit 1) on a violation.

Percentiles are exact (nearest rank over every recorded latency). Under
pytest-xdist each worker sends its latencies to the controller in its
``workeroutput``, and the controller merges them before writing and judging.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sloguard.gate.verdict import CheckReport
    from sloguard.slo.schema import SLOFile

_WORKER_OUTPUT_KEY = "sloguard_samples"
_MARKER = "capability"
_MARKERS = (_MARKER, "slo")
"""``@pytest.mark.slo("verb:name")`` is the seed's name for the same marker."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sloguard", "SLOs of the requests SLOGuard serves during the tests")
    group.addoption(
        "--metrics-output",
        metavar="FILE",
        help="record every SLOGuard request (and @pytest.mark.capability test) of the "
        "session and write the measurements per capability to FILE (JSON; YAML for .yml)",
    )
    group.addoption(
        "--slo-dir",
        metavar="DIR",
        help="judge the session's measurements against the SLO files of DIR",
    )
    group.addoption(
        "--slo-enforce",
        action="store_true",
        help="with --slo-dir: fail the session when a capability violates its SLO",
    )
    group.addoption(
        "--slo-min-requests",
        type=int,
        metavar="N",
        help="requests a capability needs for a verdict (default: its SLO's "
        "shedding.min_samples, 20 unless set)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(name): this test exercises capability name (verb:name); sloguard's "
        "--metrics-output times its call phase as one request of it",
    )
    config.addinivalue_line("markers", f"slo(name): the same as {_MARKER}(name)")
    output: str | None = config.getoption("metrics_output")
    slo_dir: str | None = config.getoption("slo_dir")
    enforce: bool = config.getoption("slo_enforce")
    min_requests: int | None = config.getoption("slo_min_requests")
    if enforce and slo_dir is None:
        raise pytest.UsageError("--slo-enforce needs --slo-dir DIR")
    if min_requests is not None and min_requests < 1:
        raise pytest.UsageError(f"--slo-min-requests must be at least 1, got {min_requests}")
    if output is None and slo_dir is None:
        return
    slos = None if slo_dir is None or _is_worker(config) else _load_slos(slo_dir)
    recorder = SessionRecorder(
        config,
        output=None if output is None else Path(output),
        slos=slos,
        enforce=enforce,
        min_requests=min_requests,
    )
    config.pluginmanager.register(recorder, SessionRecorder.NAME)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _load_slos(slo_dir: str) -> list[SLOFile]:
    """The SLO files of ``slo_dir``; a usage error naming each bad file and field."""
    from sloguard.exceptions import ConfigurationError
    from sloguard.slo.loader import load_slo_dir

    try:
        loaded, errors = load_slo_dir(slo_dir)
    except ConfigurationError as exc:
        raise pytest.UsageError(f"--slo-dir: {exc}") from exc
    if errors:
        raise pytest.UsageError("--slo-dir: invalid SLO files:\n" + "\n".join(map(str, errors)))
    if not loaded:
        raise pytest.UsageError(f"--slo-dir: no SLO files (*.yml, *.yaml) in {slo_dir}")
    return list(loaded.values())


class SessionRecorder:
    """Collects ``(latency, ok)`` per capability for one session; registered as a plugin
    only when ``--metrics-output`` or ``--slo-dir`` is given."""

    NAME = "sloguard-session-recorder"

    def __init__(
        self,
        config: pytest.Config,
        *,
        output: Path | None,
        slos: list[SLOFile] | None,
        enforce: bool,
        min_requests: int | None,
    ) -> None:
        self.config = config
        self.output = output
        self.slos = slos
        self.enforce = enforce
        self.min_requests = min_requests
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.report: CheckReport | None = None
        self.written: Path | None = None
        self._lock = threading.Lock()  # SLOGuard may serve on a uvicorn thread

    def observe(self, capability: str, latency_s: float, ok: bool) -> None:
        """Record one request (SLOGuard's request observer)."""
        with self._lock:
            self.latencies[capability].append(latency_s)
            if not ok:
                self.errors[capability] += 1

    # -- hooks ------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        from sloguard.middleware import add_request_observer

        add_request_observer(self.observe)

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        bad = [
            f"{item.nodeid}: {marker.name}({', '.join(map(repr, marker.args))})"
            for item in items
            if (marker := _closest_marker(item)) is not None and _marked_capability(marker) is None
        ]
        if bad:
            raise pytest.UsageError(
                f"@pytest.mark.{_MARKER} (or slo) takes one capability, verb:name:\n"
                + "\n".join(bad)
            )

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if call.when == "call" and not report.skipped:
            marker = _closest_marker(item)
            capability = None if marker is None else _marked_capability(marker)
            if capability is not None:
                self.observe(capability, call.duration, report.passed)
        return report

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        """xdist controller: merge what a finished worker recorded."""
        received = getattr(node, "workeroutput", {}).get(_WORKER_OUTPUT_KEY, {})
        with self._lock:
            for capability, (latencies, errors) in received.items():
                self.latencies[capability].extend(latencies)
                self.errors[capability] += errors

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from sloguard.middleware import remove_request_observer

        remove_request_observer(self.observe)
        if _is_worker(self.config):
            workeroutput: dict[str, Any] = self.config.workeroutput  # type: ignore[attr-defined]
            with self._lock:
                workeroutput[_WORKER_OUTPUT_KEY] = {
                    c: (list(v), self.errors[c]) for c, v in self.latencies.items()
                }
            return
        measured = self.measured()
        if self.output is not None:
            from sloguard.gate.metrics_file import write_metrics_file

            write_metrics_file(self.output, measured)
            self.written = self.output
        if self.slos is not None:
            from sloguard.gate.verdict import judge

            self.report = judge(self.slos, measured, min_requests=self.min_requests)
            failed = not self.report.passed
            if self.enforce and failed and exitstatus in (0, pytest.ExitCode.NO_TESTS_COLLECTED):
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.written is not None:
            terminalreporter.write_line(f"sloguard: measurements written to {self.written}")
        if self.report is None:
            return
        from sloguard.gate.report import render_text

        failed = not self.report.passed
        title = "sloguard SLO check" + (
            " FAILED (--slo-enforce)" if failed and self.enforce else ""
        )
        terminalreporter.write_sep("=", title, red=failed, green=not failed, bold=True)
        terminalreporter.write(render_text(self.report))

    def measured(self) -> dict[str, Any]:
        """The measurements per capability recorded so far."""
        from sloguard.gate.measured import Measured

        with self._lock:
            return {
                capability: Measured.from_samples(latencies, self.errors[capability])
                for capability, latencies in self.latencies.items()
            }


def _closest_marker(item: pytest.Item) -> pytest.Mark | None:
    """The ``capability`` (or ``slo``) marker closest to ``item``, if any."""
    for marker in item.iter_markers():
        if marker.name in _MARKERS:
            return marker
    return None


def _marked_capability(marker: pytest.Mark) -> str | None:
    """The capability a ``capability`` marker names, or None if it is not one verb:name."""
    from sloguard.capability import is_capability

    if len(marker.args) != 1 or marker.kwargs:
        return None
    name = marker.args[0]
    return name if isinstance(name, str) and is_capability(name) else None
