"""pytest plugin: one line per conformance scenario and a final ``N passed, M failed``.

Registered by tests/conformance/conftest.py. Under pytest-xdist the controller never loads
that conftest when pytest starts from the repository root, so tests/conftest.py should also
name this plugin (``pytest_plugins = ["conformance.summary"]``); registration is by that
name, so it is never active twice.
"""

from __future__ import annotations

import pytest

_RESULTS: dict[str, tuple[str, str]] = {}  # scenario -> (outcome, one-line summary)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    props = dict(report.user_properties)
    name = props.get("scenario")
    if not name:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            outcome = "known"  # a documented KNOWN_DIFFERENCE, still compared every run
        else:
            outcome = "passed" if report.passed else ("skipped" if report.skipped else "failed")
        last = report.longreprtext.splitlines()[-1:] or [""]
        _RESULTS[str(name)] = (outcome, str(props.get("summary", last[0])))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("conformance: BuildKit (dockerd 20.10) vs candidate")
    for name in sorted(_RESULTS):
        outcome, summary = _RESULTS[name]
        tr.write_line(f"{outcome.upper():7} {name:40} {summary}")
    passed = sum(1 for o, _ in _RESULTS.values() if o == "passed")
    failed = sum(1 for o, _ in _RESULTS.values() if o == "failed")
    known = sum(1 for o, _ in _RESULTS.values() if o == "known")
    skipped = len(_RESULTS) - passed - failed - known
    tr.write_line(
        f"{passed} passed, {failed} failed"
        + (f", {known} known differences (xfail)" if known else "")
        + (f", {skipped} skipped" if skipped else "")
    )
