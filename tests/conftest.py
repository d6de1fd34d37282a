"""Session-wide rule for tests that need real programs: serf, podman and runc, prometheus, systemd-analyze.

Such tests carry a marker (``serf``, ``podman``, ``prometheus``, ``systemd``; see pyproject.toml). Before
each of them runs, the hook below checks, once per session and part, that the
programs are there. When one is missing the test is skipped with the reason,
or fails when ``HYPERCORE_REQUIRE_REAL=1`` (``make test`` and CI set it), so a
machine without them cannot report a green run that quietly left out every
real-process suite. Skips are per test, so the summary counts each test that
did not run.

``HYPERCORE_TEST_PRETEND_MISSING=serf,runc`` makes the check treat those
programs as absent; tests/test_real_parts_required.py uses it to prove the rule.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import pytest

REQUIRE_ENV = "HYPERCORE_REQUIRE_REAL"
PRETEND_ENV = "HYPERCORE_TEST_PRETEND_MISSING"
# runc lives in /usr/sbin on Debian, which a non-root PATH often lacks; podman
# finds it there regardless, so the check looks there too.
_SBIN = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))


def _pretend_missing() -> frozenset[str]:
    return frozenset(name.strip() for name in os.environ.get(PRETEND_ENV, "").split(",") if name.strip())


def _which(program: str) -> str | None:
    if program in _pretend_missing():
        return None
    return shutil.which(program, path=os.environ.get("PATH", os.defpath) + os.pathsep + _SBIN)


def _podman_answers() -> str | None:
    """None when podman works and the test image can be built, else why not."""
    podman = _which("podman")
    assert podman is not None  # the binaries are checked first
    try:
        proc = subprocess.run([podman, "info"], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`podman info` failed: {exc}"
    if proc.returncode != 0:
        return f"`podman info` failed: {proc.stderr.decode(errors='replace').strip()[-300:]}"
    # Imported here: only container runs need the image helper.
    from tests.runtime.oci_image import BUSYBOX, busybox_is_static

    if "busybox" in _pretend_missing() or not busybox_is_static():
        return f"no static {BUSYBOX} to build the test image from (package busybox-static)"
    return None


def _playwright_importable() -> str | None:
    """None when the playwright package (the `test` extra) is there to drive chromium, else why not."""
    import importlib.util

    if "playwright" in _pretend_missing() or importlib.util.find_spec("playwright") is None:
        return "the playwright Python package is not installed (pip install -e '.[test]'; never `playwright install`)"
    return None


@dataclass(frozen=True)
class RealPart:
    """Programs a marker stands for, the Debian packages that bring them, and
    an optional deeper check run once they are on PATH."""

    programs: tuple[str, ...]
    packages: tuple[str, ...]
    probe: Callable[[], str | None] | None = None


REAL_PARTS: dict[str, RealPart] = {
    "serf": RealPart(programs=("serf",), packages=("serf",)),
    # certutil: the browser test trusts the cluster CA the way a user would, in an NSS database.
    "browser": RealPart(programs=("chromium", "certutil"), packages=("chromium", "libnss3-tools"),
                        probe=_playwright_importable),
    "podman": RealPart(
        programs=("podman", "runc"), packages=("podman", "runc", "busybox-static"), probe=_podman_answers
    ),
    "prometheus": RealPart(programs=("prometheus", "promtool"), packages=("prometheus",)),
    "systemd": RealPart(programs=("systemd-analyze",), packages=("systemd",)),
    # PID 1 of an exec workload's own PID namespace (hypercore.runtime.namespaces).
    "tini": RealPart(programs=("tini",), packages=("tini",)),
    # The vm runtime: QEMU boots the guest, podman gives the image's filesystem, mke2fs makes the root disk,
    # apt-get/dpkg-deb fetch and unpack Debian's cloud kernel, busybox is the guest's init.
    "qemu": RealPart(programs=("qemu-system-x86_64", "podman", "runc", "mke2fs", "apt-get", "dpkg-deb"),
                     packages=("qemu-system-x86", "podman", "runc", "e2fsprogs", "busybox-static"),
                     probe=_podman_answers),
}


# marker -> why its part is unusable (None: usable); filled on first need, so
# a check (`podman info` in particular) runs at most once per session and
# only when some test asks for it.
_checked: dict[str, str | None] = {}


def why_missing(marker: str) -> str | None:
    """None when the part behind ``marker`` is usable, else a message naming
    what is missing and the apt-get command that installs it."""
    if marker not in _checked:
        _checked[marker] = _check(REAL_PARTS[marker])
    return _checked[marker]


def _check(part: RealPart) -> str | None:
    absent = [program for program in part.programs if _which(program) is None]
    if absent:
        problem = f"{', '.join(absent)} not found on PATH"
    elif part.probe is not None and (failure := part.probe()) is not None:
        problem = failure
    else:
        return None
    return f"{problem}; install with `apt-get install {' '.join(part.packages)}` (`make system-deps` does it)"


def _real_required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


# tryfirst: the check must come before fixture setup, which would otherwise
# try to start the missing program (a module fixture starting a cluster, say).
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in REAL_PARTS:
        if item.get_closest_marker(marker) is None:
            continue
        reason = why_missing(marker)
        if reason is None:
            continue
        if _real_required():
            pytest.fail(f"{REQUIRE_ENV}=1 but this test needs {marker}: {reason}", pytrace=False)
        pytest.skip(f"needs {marker}: {reason}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # One line per missing part, so a run with many skips says why at a glance.
    for marker, reason in _checked.items():
        if reason is not None:
            terminalreporter.write_line(f"real parts: {marker} missing: {reason}", yellow=True)
