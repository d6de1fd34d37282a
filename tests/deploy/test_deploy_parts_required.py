"""Without Debian's prometheus (or systemd-analyze) the deploy tests skip, and under
HYPERCORE_REQUIRE_REAL=1 (`make test`, CI) they fail: tests/conftest.py's rule,
told to pretend the programs are absent. The inner runs stop at that check,
before any cluster starts, so each takes about a second."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CASES = {
    "prometheus": ("tests/deploy/test_prometheus.py", "apt-get install prometheus"),
    "systemd": ("tests/deploy/test_service_unit.py::test_the_unit_passes_systemd_analyze_verify",
                "apt-get install systemd"),
}
PROGRAM = {"prometheus": "prometheus", "systemd": "systemd-analyze"}


def run_pytest(test: str, pretend: str, *, require_real: bool) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERCORE_")}
    env["HYPERCORE_TEST_PRETEND_MISSING"] = pretend
    if require_real:
        env["HYPERCORE_REQUIRE_REAL"] = "1"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rsE", "-p", "no:cacheprovider", test],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
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
