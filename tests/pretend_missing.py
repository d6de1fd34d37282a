"""Running pytest in a child process that is told some programs are absent.

Programs cannot be uninstalled here, so tests/conftest.py honours
HYPERCORE_TEST_PRETEND_MISSING: the tests that check a missing part is
skipped (or, under HYPERCORE_REQUIRE_REAL=1, fails) run pytest through this.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pytest_pretending(missing: str, *args: str, require_real: bool) -> subprocess.CompletedProcess[str]:
    """pytest `args` with the comma-separated programs in `missing` treated as absent."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERCORE_")}
    env["HYPERCORE_TEST_PRETEND_MISSING"] = missing
    if require_real:
        env["HYPERCORE_REQUIRE_REAL"] = "1"
    return subprocess.run(
        # No cache: this inner run must not rewrite the outer session's lastfailed.
        [sys.executable, "-m", "pytest", "-q", "-rsE", "-p", "no:cacheprovider", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
