"""The ``<engine> run`` command line that starts one workload's container.

Every user string (image, args, env, ports) becomes one argv element of its
own, so nothing in a spec is interpreted by anything but the engine's own flag
parser, and the image comes after ``--``, so it can never be read as a flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from hypercore.runtime.oci_engine import LABEL_NODE, LABEL_WORKLOAD, Flavor, container_name, cpus
from hypercore.workload import WorkloadSpec

__all__ = ["RunSettings", "run_argv"]


class RunSettings(Protocol):
    """What of the driver's configuration goes into ``run`` (OCIDriver has it all)."""

    @property
    def node_name(self) -> str: ...
    @property
    def flavor(self) -> Flavor: ...
    @property
    def pull(self) -> str: ...
    @property
    def runtime(self) -> str | None: ...
    @property
    def ulimits(self) -> Sequence[str]: ...
    @property
    def publish_ip(self) -> str | None: ...
    @property
    def log_driver(self) -> str: ...
    # Optional (read with getattr): the cap in bytes of a k8s-file log; None or absent: no cap.
    # log_max_bytes: int | None


def run_argv(settings: RunSettings, workload_id: str, spec: WorkloadSpec, log_path: Path) -> list[str]:
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
        f"{LABEL_NODE}={settings.node_name}",
        f"--pull={settings.pull}",
        "--cpus",
        cpus(spec.cpu),
        "--memory",
        f"{spec.mem}m",
    ]
    if settings.runtime:
        argv += ["--runtime", settings.runtime]
    for limit in settings.ulimits:
        argv += ["--ulimit", limit]
    if settings.flavor == "podman":
        # Podman otherwise copies the *agent's* proxy variables, which may
        # carry credentials, into every container.
        argv.append("--http-proxy=false")
    if settings.log_driver == "k8s-file":
        argv += ["--log-driver", "k8s-file", "--log-opt", f"path={Path(log_path).absolute()}"]
        # conmon starts the file over when it would pass the cap, so it never holds more (--max-log-mb).
        max_bytes = getattr(settings, "log_max_bytes", None)
        if max_bytes:
            argv += ["--log-opt", f"max-size={int(max_bytes)}"]
    for key, value in spec.env.items():
        if key != "HYPERCORE_WORKLOAD_ID":
            argv += ["--env", f"{key}={value}"]
    argv += ["--env", f"HYPERCORE_WORKLOAD_ID={workload_id}"]  # last: the spec cannot fake it
    for port in spec.ports:
        argv += ["--publish", f"{settings.publish_ip}:{port}" if settings.publish_ip else port]
    argv += ["--", spec.image_ref, *(spec.args or [])]
    return argv
