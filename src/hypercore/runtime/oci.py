"""The ``container`` driver: OCI images run by a container engine's CLI.

Podman or Docker is driven through its command line, as asyncio subprocesses
with an argv list: never a shell, and every user string (image, args, env,
ports) is one argv element of its own, so nothing in a spec is interpreted by
anything but the engine's own flag parser (an image is also placed after
``--``, so it can never be read as a flag).

One container per workload, named ``hc-<workload id>`` and labelled
``hypercore.workload=<id>`` and ``hypercore.node=<node name>``, so a restarted
agent finds its containers again (:meth:`OCIDriver.list_by_label`). The handle
is ``{"engine", "container_id", "name", "log_driver"}``; later calls always go
to the engine this driver was configured with, never to a program path read
back from the registry.

Design choices, each with its reason:

* **Pull policy**: ``--pull=never`` by default (constructor ``pull=``). This
  node cannot reach a registry, and a pull that has to time out would hold a
  placement for a long time; an image that is not already on the node is a
  fast refusal ("image not known"), so the scheduler tries the next node.
  With another policy, ``start_timeout`` bounds the whole pull-and-start.
* **Logs** (Podman): ``--log-driver k8s-file --log-opt path=<log_path>``, i.e.
  conmon (the engine's per-container monitor, which outlives both ``podman``
  and the agent) writes stdout and stderr straight into the workload's
  ``output.log``. That keeps working while the agent is down, keeps the file
  after the container exited *and* after it was removed (Podman does not
  delete a log at a user-given path), and needs no copier process. The file
  is in CRI format (``<time> <stream> <F|P> <text>``); :meth:`read_logs`, which
  the manager calls when a driver provides it, turns it back into the plain
  interleaved output. Docker has no k8s-file driver; there the engine's own
  log is read on demand (``docker logs``), which lasts as long as the container.
* **Removal**: a container is *kept* after it ended, so its exit code and
  state stay inspectable by the engine (also for an agent that was down when
  it ended). :meth:`remove` (``rm -f``, idempotent) is the hook for the
  moment the workload itself is removed from the node; the log in the
  workload directory survives it. A container whose start failed (e.g. the
  port clash is only detected by ``podman start``, after ``create``) is
  removed right away.
* **Podman on this kind of host** (root in a restricted sandbox): the
  defaults add ``--runtime runc`` and explicit ``--ulimit nofile=1024:1024
  --ulimit nproc=1024:1024``. Podman otherwise asks the runtime for its own
  (much higher) default rlimits, and runc fails to raise them above the
  sandbox's hard limits ("error setting rlimit type 7/6: operation not
  permitted"); values within the hard limits always work. Both are
  constructor options (``runtime=None, ulimits=()`` to let the engine choose).
* ``--http-proxy=false`` (Podman): Podman otherwise copies the *agent's*
  proxy variables, which may carry credentials, into every container.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal

from hypercore.errors import HypercoreError
from hypercore.runtime.base import Handle, RuntimeRefused
from hypercore.workload import WorkloadSpec

__all__ = [
    "CONTAINER_PREFIX",
    "LABEL_NODE",
    "LABEL_WORKLOAD",
    "ContainerInfo",
    "EngineError",
    "OCIDriver",
    "PullPolicy",
    "container_name",
    "find_engine",
    "read_k8s_log",
]

log = logging.getLogger(__name__)

CONTAINER_PREFIX: Final = "hc-"
LABEL_WORKLOAD: Final = "hypercore.workload"
LABEL_NODE: Final = "hypercore.node"
# Searched in this order when no engine is named.
ENGINES: Final = ("podman", "docker")

PullPolicy = Literal["never", "missing", "always", "newer"]
Flavor = Literal["podman", "docker"]

# Longest engine message kept in a refusal (they can be multi-line and long).
_MAX_MESSAGE: Final = 600
# Re-check interval when `<engine> wait` itself failed but the container lives.
_WAIT_RETRY: Final = 1.0
# Extra time given to `<engine> stop` beyond the grace, for the SIGKILL and cleanup.
_STOP_SLACK: Final = 30.0
_CONTAINER_ID: Final = re.compile(r"^[0-9a-f]{12,64}$")
_GONE: Final = re.compile(r"no such (container|object)|no container with name or id", re.IGNORECASE)
_NOT_FOUND_IMAGE: Final = re.compile(r"image not known|no such image|unable to find image|manifest unknown", re.IGNORECASE)


class EngineError(HypercoreError):
    """The container engine failed on a running workload (stop, inspect...)."""


class _Default(enum.Enum):
    """Sentinel: 'the right default for this engine'."""

    DEFAULT = enum.auto()


_DEFAULT: Final = _Default.DEFAULT
# See the module docstring: within any sane hard limit, and explicit so that
# runc never has to raise a limit above the sandbox's hard one.
PODMAN_ULIMITS: Final = ("nofile=1024:1024", "nproc=1024:1024")
PODMAN_RUNTIME: Final = "runc"


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


def _flavor_of(engine: str) -> Flavor:
    return "docker" if "docker" in os.path.basename(engine).lower() else "podman"


def _trim(message: bytes | str) -> str:
    """The engine's message as one short line: 'Error: x' lines, whitespace folded."""
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Podman and Docker put the reason on the last "Error:" line; progress
    # output ("Trying to pull ...") and warnings come before it.
    errors = [line for line in lines if line.lower().startswith("error")]
    text = " | ".join(errors or lines[-3:]) or "no message"
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _cpus(value: float) -> str:
    # Plain decimal; str(1e-05) would be "1e-05", which the engines reject.
    return format(value, ".6f").rstrip("0").rstrip(".") or "0"


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


# -- k8s-file (CRI) log format ------------------------------------------------


def _parse_k8s(raw: bytes) -> bytes:
    """CRI log lines → the plain output.

    Each line is ``<RFC3339 time> <stdout|stderr> <F|P> <text>``; ``F`` ends
    a line of output, ``P`` is a piece of a longer one (no newline follows).
    Anything that does not look like that is passed through unchanged, so a
    file written some other way is still readable.
    """
    out = bytearray()
    for line in raw.splitlines(keepends=True):
        body = line[:-1] if line.endswith(b"\n") else line
        parts = body.split(b" ", 3)
        if len(parts) >= 3 and parts[1] in (b"stdout", b"stderr") and parts[2][:1] in (b"F", b"P"):
            out += parts[3] if len(parts) == 4 else b""
            if parts[2][:1] == b"F":
                out += b"\n"
        else:
            out += line
    return bytes(out)


def read_k8s_log(path: str | os.PathLike[str], tail_bytes: int | None = None) -> bytes:
    """The plain output in a k8s-file log, or its last ``tail_bytes`` bytes.

    For a tail only the end of the file is read: the plain text is never
    longer than the raw file, so reading ``tail_bytes`` plus the prefixes'
    share is enough, and the window doubles until it is.
    """
    if tail_bytes is not None and tail_bytes <= 0:
        return b""
    try:
        with open(path, "rb") as fh:
            return _parse_k8s(fh.read()) if tail_bytes is None else _tail_k8s(fh, tail_bytes)
    except FileNotFoundError:
        return b""


def _tail_k8s(fh: BinaryIO, want: int) -> bytes:
    size = fh.seek(0, os.SEEK_END)
    window = want * 2 + 4096
    while True:
        start = max(0, size - window)
        fh.seek(start)
        raw = fh.read(size - start)
        if start > 0:
            # Drop the (probably cut) first line; its prefix may be gone.
            cut = raw.find(b"\n")
            raw = raw[cut + 1 :] if cut >= 0 else b""
        plain = _parse_k8s(raw)
        if len(plain) >= want or start == 0:
            return plain[-want:]
        window *= 2


# -- the driver ---------------------------------------------------------------


class OCIDriver:
    """Runs ``spec.image_ref`` workloads with Podman or Docker."""

    name: Final = "container"

    def __init__(
        self,
        engine: str | None = None,
        *,
        node_name: str | None = None,
        flavor: Flavor | None = None,
        runtime: str | None | _Default = _DEFAULT,
        ulimits: Sequence[str] | _Default = _DEFAULT,
        pull: PullPolicy = "never",
        publish_ip: str | None = None,
        probe_timeout: float = 10.0,
        start_timeout: float = 60.0,
        command_timeout: float = 30.0,
    ) -> None:
        """
        ``engine``: executable name or path (e.g. from ``--container-engine``);
        default the first of podman, docker on PATH. ``flavor`` says which CLI
        dialect it speaks, guessed from its name. ``runtime``/``ulimits``
        default to ``runc`` and :data:`PODMAN_ULIMITS` for Podman (see the
        module docstring) and to the engine's own for Docker. ``publish_ip``
        restricts published ports to one host address (default: all).
        """
        self.engine = find_engine(engine) or engine or ENGINES[0]
        self.flavor: Flavor = flavor or _flavor_of(self.engine)
        self.node_name = node_name or socket.gethostname()
        podman = self.flavor == "podman"
        self.runtime = (PODMAN_RUNTIME if podman else None) if runtime is _DEFAULT else runtime
        self.ulimits = tuple(PODMAN_ULIMITS if podman else ()) if ulimits is _DEFAULT else tuple(ulimits)
        self.pull = pull
        self.publish_ip = publish_ip
        self.probe_timeout = probe_timeout
        self.start_timeout = start_timeout
        self.command_timeout = command_timeout
        # k8s-file lets conmon write straight into output.log (Podman only).
        self.log_driver = "k8s-file" if podman else "engine"
        self.probe_error: str | None = None

    def __repr__(self) -> str:
        return f"OCIDriver(engine={self.engine!r}, flavor={self.flavor!r}, node={self.node_name!r})"

    # -- discovery -------------------------------------------------------------

    @classmethod
    async def detect(cls, engine: str | None = None, **options: Any) -> OCIDriver | None:
        """A driver for the first engine that answers (only ``engine`` if
        named), or None; the node then does not offer ``container``."""
        candidates = [engine] if engine else [c for c in ENGINES if shutil.which(c)]
        for candidate in candidates:
            driver = cls(candidate, **options)
            if await driver.probe():
                return driver
            log.info("container engine %s is unusable: %s", candidate, driver.probe_error)
        return None

    async def probe(self) -> bool:
        """True when the engine answers ``info`` within ``probe_timeout``.

        ``info`` (not ``version``) because it needs the engine's storage, and
        for Docker the daemon, to work. The reason for a False is kept in
        :attr:`probe_error`, for the agent's log.
        """
        if find_engine(self.engine) is None:
            self.probe_error = f"no executable {self.engine!r} (install podman or docker, or name one)"
            return False
        try:
            rc, _out, err = await self._run("info", "--format", "{{json .}}", timeout=self.probe_timeout)
        except TimeoutError:
            self.probe_error = f"{self.engine} info did not answer within {self.probe_timeout:g}s"
            return False
        except OSError as exc:
            self.probe_error = f"cannot run {self.engine}: {exc}"
            return False
        if rc != 0:
            self.probe_error = f"{self.engine} info failed: {_trim(err)}"
            return False
        self.probe_error = None
        return True

    # -- subprocess plumbing ---------------------------------------------------

    async def _run(self, *args: str, timeout: float | None) -> tuple[int, bytes, bytes]:
        """Run the engine with ``args``; kill it on timeout or cancellation."""
        proc = await asyncio.create_subprocess_exec(
            self.engine,
            *args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(BaseException):
                await asyncio.shield(proc.wait())
            raise
        assert proc.returncode is not None
        return proc.returncode, out, err

    def _run_sync(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [self.engine, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=self.command_timeout,
            check=False,
        )

    # -- start -----------------------------------------------------------------

    def run_argv(self, workload_id: str, spec: WorkloadSpec, log_path: Path) -> list[str]:
        """The engine arguments that start this workload (without the engine itself)."""
        assert spec.image_ref is not None
        argv = [
            "run",
            "--detach",
            "--name",
            container_name(workload_id),
            "--label",
            f"{LABEL_WORKLOAD}={workload_id}",
            "--label",
            f"{LABEL_NODE}={self.node_name}",
            f"--pull={self.pull}",
            "--cpus",
            _cpus(spec.cpu),
            "--memory",
            f"{spec.mem}m",
        ]
        if self.runtime:
            argv += ["--runtime", self.runtime]
        for limit in self.ulimits:
            argv += ["--ulimit", limit]
        if self.flavor == "podman":
            argv.append("--http-proxy=false")
        if self.log_driver == "k8s-file":
            argv += ["--log-driver", "k8s-file", "--log-opt", f"path={Path(log_path).absolute()}"]
        for key, value in spec.env.items():
            if key != "HYPERCORE_WORKLOAD_ID":
                argv += ["--env", f"{key}={value}"]
        argv += ["--env", f"HYPERCORE_WORKLOAD_ID={workload_id}"]  # last: the spec cannot fake it
        for port in spec.ports:
            argv += ["--publish", f"{self.publish_ip}:{port}" if self.publish_ip else port]
        argv += ["--", spec.image_ref, *(spec.args or [])]
        return argv

    async def start(self, workload_id: str, spec: WorkloadSpec, log_path: Path) -> Handle:
        if spec.image_ref is None:
            raise RuntimeRefused(
                "the container driver runs 'image_ref' workloads; this one is a shell command, "
                "which needs a node with the 'exec' capability"
            )
        name = container_name(workload_id)
        Path(log_path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = self.run_argv(workload_id, spec, Path(log_path))
        try:
            rc, out, err = await self._run(*argv, timeout=self.start_timeout)
        except ValueError as exc:  # e.g. a NUL byte in an arg or env value
            raise RuntimeRefused(f"the container driver cannot run this spec: {exc}") from exc
        except OSError as exc:
            raise RuntimeRefused(f"node {self.node_name} could not run {self.engine}: {exc}") from exc
        except TimeoutError:
            # The run may have got as far as a (running) container: it is ours.
            await self._discard(name, force=True)
            raise RuntimeRefused(
                f"{self.flavor} did not start image {spec.image_ref} within {self.start_timeout:g}s "
                f"(pull policy {self.pull!r})"
            ) from None
        except asyncio.CancelledError:
            await asyncio.shield(self._discard(name, force=True))
            raise
        if rc != 0:
            # `run` = create + start; a failed start (port clash, runtime
            # error) leaves a created container behind. `rm` without -f never
            # touches a running one, so a live container that merely holds
            # the same name is left alone.
            await self._discard(name, force=False)
            raise RuntimeRefused(self._refusal(spec, err))
        container_id = out.decode(errors="replace").strip().splitlines()[-1:] or [""]
        cid = container_id[0].strip()
        if not _CONTAINER_ID.match(cid):
            cid = await self._id_of(name) or name
        return {"engine": self.engine, "container_id": cid, "name": name, "log_driver": self.log_driver}

    def _refusal(self, spec: WorkloadSpec, err: bytes) -> str:
        message = _trim(err)
        hint = ""
        if _NOT_FOUND_IMAGE.search(message) and self.pull == "never":
            hint = " (this node does not pull images; load the image on the node first)"
        return f"{self.flavor} on node {self.node_name} refused image {spec.image_ref}: {message}{hint}"

    def _force_rm(self) -> list[str]:
        # Podman's `rm -f` first stops with the image's stop timeout (10 s by
        # default, and a PID 1 without a TERM handler ignores SIGTERM); a
        # container being deleted gets no grace. Docker's `rm -f` kills at once.
        return ["--force", "--time", "0"] if self.flavor == "podman" else ["--force"]

    async def _discard(self, name: str, *, force: bool) -> None:
        with contextlib.suppress(Exception):
            await self._run("rm", *(self._force_rm() if force else []), name, timeout=self.command_timeout)

    async def _id_of(self, name: str) -> str | None:
        rc, out, _err = await self._run("container", "inspect", "--format", "{{.Id}}", name, timeout=self.command_timeout)
        if rc != 0:
            return None
        return out.decode(errors="replace").strip() or None

    # -- watching and ending ---------------------------------------------------

    @staticmethod
    def _ref(handle: Handle) -> str:
        return str(handle.get("container_id") or handle["name"])

    async def _inspect(self, ref: str) -> dict[str, Any] | None:
        """The engine's JSON for one container; None if it is gone."""
        rc, out, err = await self._run("container", "inspect", ref, timeout=self.command_timeout)
        if rc != 0:
            if _GONE.search(err.decode(errors="replace")):
                return None
            raise EngineError(f"{self.flavor} inspect {ref}: {_trim(err)}")
        data = json.loads(out or b"[]")
        return data[0] if data else None

    async def wait(self, handle: Handle) -> int | None:
        ref = self._ref(handle)
        while True:
            rc, out, _err = await self._run("wait", ref, timeout=None)
            if rc == 0:
                with contextlib.suppress(ValueError, IndexError):
                    code = int(out.decode().split()[-1])
                    return code if code >= 0 else None
            # `wait` failed: gone (removed) → unknowable; ended → its code; a
            # hiccup of the engine while it still runs → watch again.
            try:
                info = await self._inspect(ref)
            except (TimeoutError, EngineError, ValueError):
                info = {"State": {"Running": True}}
            if info is None:
                return None
            state = info.get("State") or {}
            if not state.get("Running"):
                last = state.get("ExitCode")
                return last if isinstance(last, int) and last >= 0 else None
            await asyncio.sleep(_WAIT_RETRY)

    async def stop(self, handle: Handle, grace: float) -> None:
        """``stop -t <grace>`` (SIGTERM, SIGKILL after grace); the container is kept."""
        seconds = max(0, math.ceil(grace))
        rc, _out, err = await self._run(
            "stop", "--time", str(seconds), self._ref(handle), timeout=seconds + _STOP_SLACK
        )
        if rc != 0 and not _GONE.search(err.decode(errors="replace")):
            raise EngineError(f"{self.flavor} could not stop {handle.get('name')}: {_trim(err)}")

    async def remove(self, handle: Handle) -> None:
        """Delete the container (forcing it to end first); no-op when already gone.

        Meant for when the workload is removed from the node. The log in the
        workload directory is not the engine's to delete and stays.
        """
        rc, _out, err = await self._run("rm", *self._force_rm(), self._ref(handle), timeout=self.command_timeout)
        if rc != 0 and not _GONE.search(err.decode(errors="replace")):
            raise EngineError(f"{self.flavor} could not remove {handle.get('name')}: {_trim(err)}")

    def _state_sync(self, handle: Handle) -> dict[str, Any] | None:
        ref = self._ref(handle)
        proc = self._run_sync("container", "inspect", "--format", "{{json .State}}\t{{.Id}}", ref)
        if proc.returncode != 0:
            if _GONE.search(proc.stderr.decode(errors="replace")):
                return None
            # Not "gone": the engine could not tell. Saying False here would
            # make adopt() declare a live container lost.
            raise EngineError(f"{self.flavor} inspect {ref}: {_trim(proc.stderr)}")
        state_json, _, cid = proc.stdout.decode(errors="replace").strip().rpartition("\t")
        expected = handle.get("container_id")
        if expected and not cid.startswith(str(expected)):
            return None  # same name, another container: not this handle's
        state = json.loads(state_json)
        return state if isinstance(state, dict) else None

    def is_running(self, handle: Handle) -> bool:
        """True while the handle's very container runs; False once it is gone
        or ended. Synchronous (it is used at adopt time)."""
        state = self._state_sync(handle)
        return bool(state and state.get("Running"))

    def exit_code(self, handle: Handle) -> int | None:
        """The exit code of the handle's ended container, None if unknown or
        still running (for an agent that was down when it ended)."""
        state = self._state_sync(handle)
        if not state or state.get("Running"):
            return None
        code = state.get("ExitCode")
        return code if isinstance(code, int) and code >= 0 else None

    async def list_by_label(self, node_name: str | None = None) -> list[ContainerInfo]:
        """Every container (running or not) labelled for ``node_name`` (default: this node)."""
        node = node_name or self.node_name
        rc, out, err = await self._run(
            "ps", "--all", "--quiet", "--no-trunc", "--filter", f"label={LABEL_NODE}={node}",
            timeout=self.command_timeout,
        )
        if rc != 0:
            raise EngineError(f"{self.flavor} ps: {_trim(err)}")
        ids = [line.strip() for line in out.decode().splitlines() if line.strip()]
        if not ids:
            return []
        rc, out, err = await self._run("container", "inspect", *ids, timeout=self.command_timeout)
        # A container removed between ps and inspect makes inspect fail but
        # still print the others.
        if rc != 0 and not out.strip():
            if _GONE.search(err.decode(errors="replace")):
                return []
            raise EngineError(f"{self.flavor} inspect: {_trim(err)}")
        found = []
        for item in json.loads(out or b"[]"):
            labels = (item.get("Config") or {}).get("Labels") or {}
            state = item.get("State") or {}
            name = str(item.get("Name", "")).lstrip("/")
            code = state.get("ExitCode")
            log_driver = "k8s-file" if ((item.get("HostConfig") or {}).get("LogConfig") or {}).get("Type") == "k8s-file" else "engine"
            found.append(
                ContainerInfo(
                    workload_id=labels.get(LABEL_WORKLOAD),
                    container_id=item["Id"],
                    name=name,
                    running=bool(state.get("Running")),
                    status=str(state.get("Status", "")),
                    exit_code=code if isinstance(code, int) and code >= 0 and not state.get("Running") else None,
                    handle={"engine": self.engine, "container_id": item["Id"], "name": name, "log_driver": log_driver},
                )
            )
        return found

    # -- logs ------------------------------------------------------------------

    def read_logs(self, handle: Handle | None, log_path: Path, tail_bytes: int | None = None) -> bytes:
        """The workload's stdout+stderr as plain bytes (the manager's hook).

        k8s-file logs are read from ``log_path`` (works with the engine down,
        and after the container is gone). Engine-kept logs (Docker) are asked
        for with ``<engine> logs``, stderr merged into stdout.
        """
        if handle is None or handle.get("log_driver", "k8s-file") == "k8s-file":
            return read_k8s_log(log_path, tail_bytes)
        try:
            proc = subprocess.run(
                [self.engine, "logs", self._ref(handle)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=self.command_timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return b""
        if proc.returncode != 0:
            return b""
        data = proc.stdout
        return data if tail_bytes is None else data[-max(0, tail_bytes) :] if tail_bytes > 0 else b""
