"""The container engine's CLI, as the container driver sees it.

Finding the engine (Podman or Docker) and its dialect, running it as an
asyncio subprocess with a timeout, the names and labels a workload's
container carries, and turning the engine's messages into one short line.
The driver itself is :class:`hypercore.runtime.oci.OCIDriver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from hypercore.errors import HypercoreError
from hypercore.runtime.base import Handle

__all__ = [
    "CONTAINER_PREFIX",
    "ENGINES",
    "LABEL_NODE",
    "LABEL_WORKLOAD",
    "PODMAN_RUNTIME",
    "PODMAN_ULIMITS",
    "ContainerInfo",
    "EngineError",
    "Flavor",
    "PullPolicy",
    "container_name",
    "find_engine",
    "flavor_of",
    "probe_engine",
    "run_engine",
]

CONTAINER_PREFIX: Final = "hc-"
LABEL_WORKLOAD: Final = "hypercore.workload"
LABEL_NODE: Final = "hypercore.node"
# Searched in this order when no engine is named.
ENGINES: Final = ("podman", "docker")

PullPolicy = Literal["never", "missing", "always", "newer"]
Flavor = Literal["podman", "docker"]

# Podman's defaults on this kind of host (root in a restricted sandbox). Podman
# otherwise asks the runtime for its own (much higher) default rlimits, and
# runc fails to raise them above the sandbox's hard limits ("error setting
# rlimit type 7/6: operation not permitted"); values within any sane hard
# limit always work.
PODMAN_ULIMITS: Final = ("nofile=1024:1024", "nproc=1024:1024")
PODMAN_RUNTIME: Final = "runc"

# Longest engine message kept in a refusal (they can be multi-line and long).
_MAX_MESSAGE: Final = 600
CONTAINER_ID: Final = re.compile(r"^[0-9a-f]{12,64}$")
GONE: Final = re.compile(r"no such (container|object)|no container with name or id", re.IGNORECASE)
NOT_FOUND_IMAGE: Final = re.compile(
    r"image not known|no such image|unable to find image|manifest unknown", re.IGNORECASE
)


class EngineError(HypercoreError):
    """The container engine failed on a running workload (stop, inspect...)."""


class Default(enum.Enum):
    """Sentinel: 'the right default for this engine'."""

    DEFAULT = enum.auto()


DEFAULT: Final = Default.DEFAULT


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """A container this node's label points at, as the engine sees it now."""

    workload_id: str | None
    container_id: str
    name: str
    running: bool
    status: str  # engine words: created, running, exited, ...
    exit_code: int | None
    handle: Handle


def exit_code_of(state: Mapping[str, Any]) -> int | None:
    """The exit code in an engine's container ``State``; None while it runs or if unknown."""
    code = state.get("ExitCode")
    return code if isinstance(code, int) and code >= 0 and not state.get("Running") else None


def container_info(item: Mapping[str, Any], engine: str) -> ContainerInfo:
    """One element of ``<engine> container inspect``'s JSON as a ContainerInfo."""
    labels = (item.get("Config") or {}).get("Labels") or {}
    state = item.get("State") or {}
    name = str(item.get("Name", "")).lstrip("/")
    log_config = (item.get("HostConfig") or {}).get("LogConfig") or {}
    log_driver = "k8s-file" if log_config.get("Type") == "k8s-file" else "engine"
    return ContainerInfo(
        workload_id=labels.get(LABEL_WORKLOAD),
        container_id=item["Id"],
        name=name,
        running=bool(state.get("Running")),
        status=str(state.get("Status", "")),
        exit_code=exit_code_of(state),
        handle={"engine": engine, "container_id": item["Id"], "name": name, "log_driver": log_driver},
    )


def container_name(workload_id: str) -> str:
    return f"{CONTAINER_PREFIX}{workload_id}"


def find_engine(engine: str | None = None) -> str | None:
    """The engine executable to use: ``engine`` (a name on PATH or a path), or
    the first of podman, docker on PATH; None when there is none."""
    if engine:
        if os.sep in engine:
            return engine if os.path.isfile(engine) and os.access(engine, os.X_OK) else None
        return shutil.which(engine)
    for candidate in ENGINES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def flavor_of(engine: str) -> Flavor:
    """The CLI dialect an engine executable speaks, guessed from its name."""
    return "docker" if "docker" in os.path.basename(engine).lower() else "podman"


def trim(message: bytes | str) -> str:
    """The engine's message as one short line: 'Error: x' lines, whitespace folded."""
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Podman and Docker put the reason on the last "Error:" line; progress
    # output ("Trying to pull ...") and warnings come before it.
    errors = [line for line in lines if line.lower().startswith("error")]
    text = " | ".join(errors or lines[-3:]) or "no message"
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def is_gone(err: bytes) -> bool:
    """True when the engine's error says the container does not exist (any more)."""
    return GONE.search(err.decode(errors="replace")) is not None


def cpus(value: float) -> str:
    # Plain decimal; str(1e-05) would be "1e-05", which the engines reject.
    return format(value, ".6f").rstrip("0").rstrip(".") or "0"


async def run_engine(
    engine: str, *args: str, timeout: float | None, merge_stderr: bool = False
) -> tuple[int, bytes, bytes]:
    """Run ``engine args`` without a shell; (returncode, stdout, stderr).

    Raises TimeoutError after ``timeout`` seconds (None: no limit); on that or
    on cancellation the engine process is killed and reaped. With
    ``merge_stderr`` stderr goes into stdout (in order) and comes back empty.

    The engine runs in a process group of its own, and a timeout kills the
    whole group: asyncio reaps a process only once its pipes are closed, so a
    helper the engine forked that still holds them would otherwise stretch
    the timeout to that helper's lifetime. (What must outlive the engine,
    like Podman's conmon, starts a session of its own and is not touched.)
    """
    proc = await asyncio.create_subprocess_exec(
        engine,
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        # The group id is the engine's pid, which the kernel does not reuse
        # while any member of the group is left, so this never hits a stranger.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err or b""


async def probe_engine(engine: str, timeout: float) -> str | None:
    """None when ``engine info`` answers within ``timeout``, else why not (for a log).

    ``info`` (not ``version``) because it needs the engine's storage, and for
    Docker the daemon, to work.
    """
    if find_engine(engine) is None:
        return f"no executable {engine!r} (install podman or docker, or name one)"
    try:
        rc, _out, err = await run_engine(engine, "info", "--format", "{{json .}}", timeout=timeout)
    except TimeoutError:
        return f"{engine} info did not answer within {timeout:g}s"
    except OSError as exc:
        return f"cannot run {engine}: {exc}"
    return f"{engine} info failed: {trim(err)}" if rc != 0 else None
