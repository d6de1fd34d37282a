"""A missing serf or Podman skips the tests that need it, or fails them under
HYPERCORE_REQUIRE_REAL=1 (as `make test` runs), instead of hiding them.

The programs cannot be uninstalled here, so tests/conftest.py is told to
pretend they are absent (HYPERCORE_TEST_PRETEND_MISSING). Each inner run
selects tests whose setup never gets past that check, so it takes about a
second.
"""

from __future__ import annotations

import subprocess

from tests.pretend_missing import pytest_pretending

# One test per marker; both would start real programs if the check let them.
NEEDS_SERF = "tests/membership/test_serf_rpc.py::test_handshake_and_auth"
NEEDS_PODMAN = "tests/runtime/test_oci_driver.py::test_probe"
PRETEND = "serf,runc"  # runc: Podman's part is missing when any of its programs is


def run_pytest(*args: str, require_real: bool) -> subprocess.CompletedProcess[str]:
    return pytest_pretending(PRETEND, *args, require_real=require_real)


def test_missing_programs_skip_each_test_with_a_reason() -> None:
    proc = run_pytest(NEEDS_SERF, NEEDS_PODMAN, require_real=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "2 skipped" in out, out
    assert "needs serf: serf not found on PATH; install with `apt-get install serf`" in out, out
    assert "needs podman: runc not found on PATH; install with `apt-get install podman runc" in out, out


def test_missing_programs_fail_when_real_parts_are_required() -> None:
    proc = run_pytest(NEEDS_SERF, NEEDS_PODMAN, require_real=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "skipped" not in out, out
    # Failed in setup, so pytest counts them as errors: either way the run is red.
    assert "2 errors" in out, out
    assert "HYPERCORE_REQUIRE_REAL=1 but this test needs serf: serf not found on PATH" in out, out
    assert "apt-get install serf" in out, out
    assert "HYPERCORE_REQUIRE_REAL=1 but this test needs podman: runc not found on PATH" in out, out


def test_real_process_suites_carry_their_markers() -> None:
    # Everything under these paths starts serf or a container engine, so
    # none of it may escape the check by lacking a marker.
    paths = ("tests/cluster", "tests/membership/test_serf_rpc.py")
    proc = run_pytest("--collect-only", "-m", "not serf", *paths, require_real=False)
    assert proc.returncode == 5 and "no tests collected" in proc.stdout, proc.stdout + proc.stderr
    proc = run_pytest("--collect-only", "-m", "not podman", "tests/cluster/test_containers.py", require_real=False)
    assert proc.returncode == 5 and "no tests collected" in proc.stdout, proc.stdout + proc.stderr
