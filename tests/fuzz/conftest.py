"""The fuzzers' count of the cases each one tried, shown in every run's terminal summary.

Every fuzz test takes the `fuzz_cases` fixture (tests/fuzz/support.py), ticks
it once per generated case and calls `.report()` at its end. The count goes
to the test's user_properties (so it crosses pytest-xdist workers) and is
printed in a "fuzz cases tried" section of the terminal summary.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fuzz.support import FuzzCases


@pytest.fixture
def fuzz_cases(record_property: Any, request: pytest.FixtureRequest) -> FuzzCases:
    return FuzzCases(record_property, request.node.name)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for key, value in getattr(report, "user_properties", ()):
                if key == "fuzz_cases":
                    rows.append((report.nodeid, value, report.outcome))
    if rows:
        terminalreporter.write_sep("-", "fuzz cases tried")
        for nodeid, count, outcome in sorted(rows):
            terminalreporter.write_line(f"{count:6d}  {nodeid} ({outcome})")
        terminalreporter.write_line(f"{sum(r[1] for r in rows):6d}  in all")
