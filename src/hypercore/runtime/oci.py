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
  is in CRI format; :meth:`read_logs` (the manager's hook) turns it back
  into the plain interleaved output (:mod:`hypercore.runtime.oci_logs`). Docker has no k8s-file driver; there the engine's own
  log is read on demand (``docker logs``), which lasts as long as the container.
* **Removal**: a container is *kept* after it ended, so its exit code and
  state stay inspectable by the engine (also for an agent that was down when
  it ended). :meth:`remove` (``rm -f``, idempotent) is the hook for the
  moment the workload itself is removed from the node; the log in the
  workload directory survives it. A container whose start failed (e.g. the
  port clash is only detected by ``podman start``, after ``create``) is
  removed right away.
* **Podman on a restricted host**: ``--runtime runc`` and explicit
  ``--ulimit`` values by default (why: :data:`~hypercore.runtime.oci_engine.PODMAN_ULIMITS`);
  constructor options (``runtime=None, ulimits=()`` to let the engine choose).
* ``--http-proxy=false`` (Podman): Podman otherwise copies the *agent's*
  proxy variables, which may carry credentials, into every container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import hypercore.runtime.isolation as isolation
from hypercore.runtime.base import Handle, RuntimeRefused
from hypercore.runtime.oci_engine import (
    CONTAINER_ID,
    CONTAINER_PREFIX,
    DEFAULT,
    ENGINES,
    LABEL_NODE,
    LABEL_WORKLOAD,
    NOT_FOUND_IMAGE,
    PODMAN_RUNTIME,
    PODMAN_ULIMITS,
    ContainerInfo,
    Default,
    EngineError,
    Flavor,
    PullPolicy,
    container_info,
    container_name,
    exit_code_of,
    find_engine,
    flavor_of,
    is_gone,
    probe_engine,
    run_engine,
    trim,
)
from hypercore.runtime.oci_argv import run_argv
from hypercore.runtime.oci_logs import read_k8s_log
from hypercore.workload import WorkloadSpec

# The engine and log helpers live in oci_engine and oci_logs; their public
# names are re-exported here, where callers have always imported them from.
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
    "OCIDriver",
    "PullPolicy",
    "container_name",
    "find_engine",
    "read_k8s_log",
]

log = logging.getLogger(__name__)

# Re-check interval when `<engine> wait` itself failed but the container lives.
_WAIT_RETRY: Final = 1.0
# Extra time given to `<engine> stop` beyond the grace, for the SIGKILL and cleanup.
_STOP_SLACK: Final = 30.0


class OCIDriver:
    """Runs ``spec.image_ref`` workloads with Podman or Docker."""

    name: Final = "container"

    def __init__(
        self,
        engine: str | None = None,
        *,
        node_name: str | None = None,
        flavor: Flavor | None = None,
        runtime: str | None | Default = DEFAULT,
        ulimits: Sequence[str] | Default = DEFAULT,
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
        self.flavor: Flavor = flavor or flavor_of(self.engine)
        self.node_name = node_name or socket.gethostname()
        podman = self.flavor == "podman"
        self.runtime = (PODMAN_RUNTIME if podman else None) if runtime is DEFAULT else runtime
        self.ulimits = tuple(PODMAN_ULIMITS if podman else ()) if ulimits is DEFAULT else tuple(ulimits)
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
        self.probe_error = await probe_engine(self.engine, self.probe_timeout)
        return self.probe_error is None

    # -- subprocess plumbing ---------------------------------------------------

    async def _run(self, *args: str, timeout: float | None, merge_stderr: bool = False) -> tuple[int, bytes, bytes]:
        """Run the engine with ``args``; kill it on timeout or cancellation."""
        return await run_engine(self.engine, *args, timeout=timeout, merge_stderr=merge_stderr)

    # -- start -----------------------------------------------------------------

    def run_argv(self, workload_id: str, spec: WorkloadSpec, log_path: Path) -> list[str]:
        """The engine arguments that start this workload (without the engine itself)."""
        return run_argv(self, workload_id, spec, log_path)

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
        if not CONTAINER_ID.match(cid):
            cid = await self._id_of(name) or name
        return {"engine": self.engine, "container_id": cid, "name": name, "log_driver": self.log_driver}

    def _refusal(self, spec: WorkloadSpec, err: bytes) -> str:
        message = trim(err)
        hint = ""
        if NOT_FOUND_IMAGE.search(message) and self.pull == "never":
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
            if is_gone(err):
                return None
            raise EngineError(f"{self.flavor} inspect {ref}: {trim(err)}")
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
                return exit_code_of(state)
            await asyncio.sleep(_WAIT_RETRY)

    async def stop(self, handle: Handle, grace: float) -> None:
        """``stop -t <grace>`` (SIGTERM, SIGKILL after grace); the container is kept."""
        seconds = max(0, math.ceil(grace))
        rc, _out, err = await self._run(
            "stop", "--time", str(seconds), self._ref(handle), timeout=seconds + _STOP_SLACK
        )
        if rc != 0 and not is_gone(err):
            raise EngineError(f"{self.flavor} could not stop {handle.get('name')}: {trim(err)}")

    async def remove(self, handle: Handle) -> None:
        """Delete the container (forcing it to end first); no-op when already gone.

        Meant for when the workload is removed from the node. The log in the
        workload directory is not the engine's to delete and stays.
        """
        rc, _out, err = await self._run("rm", *self._force_rm(), self._ref(handle), timeout=self.command_timeout)
        if rc != 0 and not is_gone(err):
            raise EngineError(f"{self.flavor} could not remove {handle.get('name')}: {trim(err)}")

    # Async only: every caller (WorkloadManager.adopt, tests) runs on the event
    # loop, so no synchronous variant that would block it is kept.
    async def _state(self, handle: Handle) -> dict[str, Any] | None:
        """The engine's ``State`` of the handle's very container; None once it is gone.

        Raises EngineError when the engine cannot tell: answering "not
        running" then would make adopt() declare a live container lost.
        """
        info = await self._inspect(self._ref(handle))
        expected = handle.get("container_id")
        if info is None or (expected and not str(info.get("Id", "")).startswith(str(expected))):
            return None  # gone, or the same name now is another container: not this handle's
        state = info.get("State")
        return state if isinstance(state, dict) else None

    async def is_alive(self, handle: Handle) -> bool:
        """True while the handle's very container runs; False once it is gone
        or ended (used at adopt time)."""
        state = await self._state(handle)
        return bool(state and state.get("Running"))

    async def exit_code(self, handle: Handle) -> int | None:
        """The exit code of the handle's ended container, None if unknown or
        still running (for an agent that was down when it ended)."""
        state = await self._state(handle)
        return exit_code_of(state) if state else None

    async def list_by_label(self, node_name: str | None = None) -> list[ContainerInfo]:
        """Every container (running or not) labelled for ``node_name`` (default: this node)."""
        node = node_name or self.node_name
        rc, out, err = await self._run(
            "ps", "--all", "--quiet", "--no-trunc", "--filter", f"label={LABEL_NODE}={node}",
            timeout=self.command_timeout,
        )
        if rc != 0:
            raise EngineError(f"{self.flavor} ps: {trim(err)}")
        ids = [line.strip() for line in out.decode().splitlines() if line.strip()]
        if not ids:
            return []
        rc, out, err = await self._run("container", "inspect", *ids, timeout=self.command_timeout)
        # A container removed between ps and inspect makes inspect fail but
        # still print the others.
        if rc != 0 and not out.strip():
            if is_gone(err):
                return []
            raise EngineError(f"{self.flavor} inspect: {trim(err)}")
        return [container_info(item, self.engine) for item in json.loads(out or b"[]")]

    async def locate(self, workload_id: str, log_path: Path) -> Handle | None:
        """The workload's container by name and label, for an agent killed before it stored the handle
        (after the `run` it left behind, in a session of its own, is done); None if there is none."""
        name, deadline = container_name(workload_id), asyncio.get_running_loop().time() + self.start_timeout
        while await asyncio.to_thread(isolation.has_args, "--name", name) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        info = await self._inspect(name)
        labels = ((info or {}).get("Config") or {}).get("Labels") or {}
        return container_info(info, self.engine).handle if info and labels.get(LABEL_WORKLOAD) == workload_id else None

    async def running(self, workloads_dir: Path) -> dict[str, Handle]:
        """This node's running containers by workload id (the manager stops those it has no record of)."""
        return {c.workload_id: c.handle for c in await self.list_by_label() if c.running and c.workload_id}

    # -- logs ------------------------------------------------------------------

    async def read_logs(self, handle: Handle | None, log_path: Path, tail_bytes: int | None = None) -> bytes:
        """The workload's stdout+stderr as plain bytes (the manager's hook).

        k8s-file logs are read from ``log_path`` (works with the engine down,
        and after the container is gone), in a worker thread: the file can be
        big. Engine-kept logs (Docker) are asked for with ``<engine> logs``,
        stderr merged into stdout, bounded by ``command_timeout``.
        """
        if handle is None or handle.get("log_driver", "k8s-file") == "k8s-file":
            return await asyncio.to_thread(read_k8s_log, log_path, tail_bytes)
        if tail_bytes is not None and tail_bytes <= 0:
            return b""
        try:
            rc, out, _err = await self._run(
                "logs", self._ref(handle), timeout=self.command_timeout, merge_stderr=True
            )
        except (OSError, TimeoutError):
            return b""
        if rc != 0:
            return b""
        return out if tail_bytes is None else out[-tail_bytes:]
