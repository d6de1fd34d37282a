"""Without Debian's prometheus (or systemd-analyze) the deploy tests skip, and under
HYPERCORE_REQUIRE_REAL=1 (`make test`, CI) they fail: tests/conftest.py's rule,
told to pretend the programs are absent. The inner runs stop at that check,
before any cluster starts, so each takes about a second."""

from __future__ import annotations

import pytest

from tests.pretend_missing import pytest_pretending

CASES = {
    "prometheus": ("tests/deploy/test_prometheus.py", "apt-get install prometheus"),
    "systemd": ("tests/deploy/test_service_unit.py::test_the_unit_passes_systemd_analyze_verify",
                "apt-get install systemd"),
}
PROGRAM = {"prometheus": "prometheus", "systemd": "systemd-analyze"}


def run_pytest(test: str, pretend: str, *, require_real: bool) -> str:
    proc = pytest_pretending(pretend, test, require_real=require_real)
    return f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("marker", sorted(CASES))
def test_a_missing_program_skips_or_fails_the_tests_that_need_it(marker: str) -> None:
    test, install = CASES[marker]
    program = PROGRAM[marker]
    out = run_pytest(test, program, require_real=False)
    assert out.startswith("exit 0") and "1 skipped" in out, out
    assert f"needs {marker}: {program} not found on PATH; install with `{install}`" in out, out

    out = run_pytest(test, program, require_real=True)
    assert out.startswith("exit 1") and "1 error" in out and "skipped" not in out, out
    assert f"HYPERCORE_REQUIRE_REAL=1 but this test needs {marker}: {program} not found on PATH" in out, out
