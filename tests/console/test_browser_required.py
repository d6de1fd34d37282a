"""A missing chromium or playwright skips the browser test, or fails it under HYPERCORE_REQUIRE_REAL=1.

tests/conftest.py is told to pretend the part is absent (HYPERCORE_TEST_PRETEND_MISSING), as
tests/test_real_parts_required.py does for serf and Podman; the check runs before the cluster
fixture, so each inner run takes about a second.
"""

from __future__ import annotations

import pytest

from tests.pretend_missing import pytest_pretending

NEEDS_BROWSER = "tests/console/test_console.py::test_console_in_a_browser"


def run_pytest(pretend: str, *, require_real: bool) -> str:
    proc = pytest_pretending(pretend, NEEDS_BROWSER, require_real=require_real)
    return f"rc={proc.returncode}\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize(("pretend", "says"), [
    ("chromium", "chromium not found on PATH; install with `apt-get install chromium libnss3-tools`"),
    ("certutil", "certutil not found on PATH; install with `apt-get install chromium libnss3-tools`"),
    ("playwright", "the playwright Python package is not installed"),
])
def test_a_missing_browser_skips_or_fails_when_required(pretend: str, says: str) -> None:
    out = run_pytest(pretend, require_real=False)
    assert out.startswith("rc=0") and "1 skipped" in out and f"needs browser: {says}" in out, out
    out = run_pytest(pretend, require_real=True)
    assert out.startswith("rc=1") and "skipped" not in out and "1 error" in out, out
    assert f"HYPERCORE_REQUIRE_REAL=1 but this test needs browser: {says}" in out, out
