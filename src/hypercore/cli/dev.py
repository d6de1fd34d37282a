"""`hypercore dev …`: clusters on this machine for trying things out.

`hypercore dev up --topology FILE --state-file S` starts the geo test-bed
(hypercore.testbed.geo): each node of FILE in its own network namespace,
every packet between them through a WAN emulator with the topology's delay
and loss. Once every node is admitted and has measured every other one, it
writes S (JSON: nodes with name, region and API address, a user token, the
CA file) and waits; SIGTERM or SIGINT (Ctrl-C) ends every process and
namespace it made and removes S.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import click

from hypercore.cli.common import fail, user_errors


class _Stopped(BaseException):
    """SIGTERM or SIGINT arrived: unwind to the cleanup (a BaseException, so no `except Exception` eats it)."""


def _stop(_sig: int, _frame: Any) -> NoReturn:
    raise _Stopped()


@click.group("dev", short_help="Local clusters for trying things out.")
def dev_group() -> None:
    """Clusters on this machine, for demos and tests."""


@dev_group.command("up")
@click.option("--topology", "topology_file", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Regions, nodes and links (examples/topologies/three-regions.json).")
@click.option("--state-file", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Written once the cluster is ready: nodes (name, region, api), token, ca_file. Removed at exit.")
@click.option("--dir", "root", type=click.Path(path_type=Path, file_okay=False),
              help="Keep the cluster's files (CA, data dirs, logs) here, also after exit (default: a temporary "
                   "directory, removed at exit unless the start failed).")
@click.option("--timeout", type=click.FloatRange(min=5, max=3600), default=120.0, show_default=True,
              help="Seconds to wait for every node to be admitted and measured.")
@user_errors
def up(topology_file: Path, state_file: Path, root: Path | None, timeout: float) -> None:
    """Start the geo test-bed: every node in its own network namespace, links with the topology's delay and loss."""
    from hypercore.testbed.geo import GeoTestbed, check_can_run
    from hypercore.testbed.topology import load_topology

    topology = load_topology(topology_file)
    check_can_run()
    if not state_file.parent.is_dir():
        fail(f"--state-file {state_file}: directory {state_file.parent} does not exist")
    temporary = root is None
    root = Path(tempfile.mkdtemp(prefix="hypercore-geo-")) if root is None else root.resolve()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    bed = GeoTestbed(topology, root)
    ok = False
    try:
        try:
            bed.start(timeout)
        except AssertionError as exc:  # devcluster's waits say what they waited for, and what they saw last
            fail(f"the geo test-bed did not come up within {timeout:g} s: {exc}\nlogs: {root}")
        _write_state(state_file, bed.state())
        regions = sorted({n["region"] for n in bed.state()["nodes"]})
        click.echo(f"geo test-bed up: {len(bed.nodes)} nodes in {len(regions)} regions ({', '.join(regions)}), "
                   f"10.{bed.octet}.0.0/16 via {bed.host_address}; all measured after {bed.timings['measured_s']:g} s, "
                   f"coordinates settled after {bed.timings['coordinates_s']:g} s; state in {state_file}; files in {root}")
        click.echo("stop it with Ctrl-C or SIGTERM", err=True)
        ok = True
        while True:
            signal.pause()
    except _Stopped:
        pass
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second Ctrl-C must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        bed.close()
        state_file.unlink(missing_ok=True)
        if temporary and ok:
            shutil.rmtree(root, ignore_errors=True)
        click.echo("geo test-bed stopped: every agent, workload, namespace and the WAN emulator are gone", err=True)


def _write_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically, readable by its owner only: it holds a user token."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)
