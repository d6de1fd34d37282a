"""`hypercore node …`: offline care of this machine's node data, with its agent stopped.

`hypercore node recover --data-dir DIR` is the way out when the workload
registry (`DIR/registry.sqlite3`) is damaged and the agent refuses to start.
It moves the file (and its -wal/-shm companions) aside as
`registry.sqlite3.damaged-<UTC time>` and builds a new registry from what the
runtimes still report:

- containers, from the container engine, by their `hypercore.workload`
  label: those labelled for this node (`--node-name`, or the name kept in the
  data dir) or whose workload directory is here. Image, args, CPU, memory,
  ports and environment are read back from the engine; a running one is
  recorded running (the agent re-adopts it at start), an ended one exited
  with its exit code;
- exec workloads, from their directories (`DIR/workloads/<id>`): the
  supervisor's `state.json` gives the handle, the limits and how it ended; a
  live one's command and environment are read back from /proc (the command
  is never written down, so an ended one's is unknown: its spec then holds
  the shell comment :data:`UNKNOWN_COMMAND`). A workload from before the
  supervisor is found by its process's `HYPERCORE_WORKLOAD_ID`. A directory
  with neither is recorded with state `unknown` (the API lists it
  quarantined, with the reason); its log is kept.

What a registry held and the runtimes do not (owner, request id, policy) is
lost: recovered workloads have no owner, so only management tokens see them.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hypercore.cli.common import fail, user_errors

if TYPE_CHECKING:
    from hypercore.store import WorkloadRecord, WorkloadStore

_ENGINE_ENV = frozenset({"PATH", "TERM", "HOME", "HOSTNAME", "container", "HYPERCORE_WORKLOAD_ID"})
_EXEC_ENV = frozenset({"PATH", "HOME", "LANG", "HYPERCORE_WORKLOAD_ID"})
# The spec of an exec workload whose command nothing recorded: a shell comment, so running it does nothing.
UNKNOWN_COMMAND = "# command unknown: rebuilt by hypercore node recover"
_CRI_LINE = re.compile(rb"^\S+ (stdout|stderr) [FP] ")
_RECOVERED = "rebuilt by `hypercore node recover`"


@click.group("node", short_help="Look after this node's data (agent stopped).")
def node_group() -> None:
    """Look after this machine's node data (run with its agent stopped)."""


@node_group.command("recover")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), envvar="HYPERCORE_DATA_DIR",
              default=Path("~/.local/share/hypercore"), show_default=True, help="The agent's --data-dir.")
@click.option("--node-name", help="The node's name (default: the one kept in the data dir, else the label of the "
                                  "containers whose workload directory is here).")
@click.option("--container-engine", help="podman, docker or a path (default: podman, else docker).")
@click.option("--force", is_flag=True, help="Set the registry aside and rebuild it even if it opens fine.")
@user_errors
def recover(data_dir: Path, node_name: str | None, container_engine: str | None, force: bool) -> None:
    """Set a damaged workload registry aside and rebuild it from the containers and workload directories."""
    from hypercore.store import REGISTRY_FILENAME, RegistryDamaged, WorkloadStore

    data_dir = data_dir.expanduser()
    if not data_dir.is_dir():
        fail(f"--data-dir {data_dir}: no such directory")
    registry = data_dir / REGISTRY_FILENAME
    if registry.exists():
        try:
            WorkloadStore(data_dir).close()
            if not force:
                click.echo(f"{registry} opens and passes SQLite's integrity check: nothing to recover "
                           "(--force rebuilds it anyway)")
                return
        except RegistryDamaged as exc:
            click.echo(f"{registry} is damaged: {exc.detail}")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for path in (registry, *(registry.with_name(registry.name + s) for s in ("-wal", "-shm", "-journal"))):
            if path.exists():
                aside = path.with_name(f"{path.name}.damaged-{stamp}")
                path.rename(aside)
                click.echo(f"moved {path.name} aside to {aside}")
    else:
        click.echo(f"{registry} is missing: rebuilding it")
    name = node_name or _kept_name(data_dir)
    containers = asyncio.run(_containers(container_engine, data_dir, name))
    if name is None:
        labels = {str(((c.get("Config") or {}).get("Labels") or {}).get("hypercore.node")) for c in containers}
        if len(labels) > 1 or (not labels and any((data_dir / "workloads").glob("*-*-*-*-*"))):
            fail("cannot tell this node's name (no --node-name, no node-name file in the data dir, and "
                 f"{len(labels)} node labels on its containers): pass --node-name")
        name = labels.pop() if labels else "unknown"
    with WorkloadStore(data_dir) as store:
        counts = asyncio.run(_rebuild(store, data_dir, name, containers))
    summary = ", ".join(f"{n} {what}" for what, n in counts.items() if n) or "no workloads"
    click.echo(f"rebuilt {registry} for node {name}: {summary}")
    if counts.get("exec, state unknown"):
        click.echo("exec workloads without a driver state file are listed with state 'unknown' (quarantined); "
                   "remove their directories once you know they are gone")
    click.echo("start the agent again: it re-adopts the running workloads")


def _kept_name(data_dir: Path) -> str | None:
    path = data_dir / "node-name"  # written by an agent that made up its own name (hypercore.agent)
    if not path.exists():
        return None
    return path.read_text().strip() or None


async def _containers(engine: str | None, data_dir: Path, node: str | None) -> list[dict[str, Any]]:
    """`<engine> inspect` of every container of this node (by label, or by a workload directory here)."""
    from hypercore.runtime.oci_engine import LABEL_NODE, LABEL_WORKLOAD, find_engine, run_engine, trim
    from hypercore.workload import is_workload_id

    found = find_engine(engine)
    if found is None:
        if engine:
            fail(f"--container-engine {engine!r}: not found")
        click.echo("no container engine found: containers not looked for")
        return []
    rc, out, err = await run_engine(found, "ps", "--all", "--quiet", "--no-trunc", "--filter", f"label={LABEL_WORKLOAD}",
                                    timeout=60)
    if rc != 0:
        fail(f"{found} ps: {trim(err)}")
    ids = [line.strip() for line in out.decode().splitlines() if line.strip()]
    if not ids:
        return []
    rc, out, err = await run_engine(found, "container", "inspect", *ids, timeout=120)
    if rc != 0 and not out.strip():
        fail(f"{found} inspect: {trim(err)}")
    mine = []
    for item in json.loads(out or b"[]"):
        labels = (item.get("Config") or {}).get("Labels") or {}
        wid = str(labels.get(LABEL_WORKLOAD, ""))
        if is_workload_id(wid) and (labels.get(LABEL_NODE) == node or (data_dir / "workloads" / wid).is_dir()):
            item["_engine"] = found
            mine.append(item)
    return mine


def _time(text: Any) -> float | None:
    """An engine's RFC 3339 time (nanoseconds, Z) as Unix time; None for unset (year 1) or unreadable."""
    if not isinstance(text, str):
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", text.strip())
    if m is None:
        return None
    fraction = (m.group(2) or ".0")[:7]
    zone = m.group(3) if m.group(3) not in (None, "Z") else "+00:00"
    value = datetime.fromisoformat(f"{m.group(1)}{fraction}{zone}").timestamp()
    return value if value > 0 else None


def _container_spec(item: dict[str, Any]) -> Any:
    from hypercore.workload import WorkloadSpec

    config, host = item.get("Config") or {}, item.get("HostConfig") or {}
    env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
    ports = []
    for target, bindings in (host.get("PortBindings") or {}).items():
        port, _, proto = str(target).partition("/")
        for b in bindings or []:
            if b.get("HostPort"):
                ports.append(f"{b['HostPort']}:{port}" + ("/udp" if proto == "udp" else ""))
    nano, memory = host.get("NanoCpus") or 0, host.get("Memory") or 0
    return WorkloadSpec(
        image_ref=config.get("Image") or item.get("ImageName"), args=config.get("Cmd") or None,
        cpu=round(nano / 1e9, 6) if nano else 1.0, mem=memory // (1024 * 1024) if memory else 256, ports=ports,
        env={k: v for k, v in env.items() if k not in _ENGINE_ENV and re.fullmatch(r"[A-Za-z_]\w*", k)})


async def _rebuild(store: WorkloadStore, data_dir: Path, node: str, containers: list[dict[str, Any]]) -> dict[str, int]:
    from pydantic import ValidationError

    from hypercore.runtime.oci_engine import container_info
    from hypercore.store import WorkloadRecord
    from hypercore.workload import WorkloadState, is_workload_id

    counts = {"running containers": 0, "ended containers": 0, "running exec": 0, "ended exec": 0,
              "exec, state unknown": 0, "container gone, state unknown": 0}
    done: set[str] = set()
    for item in containers:
        info = container_info(item, item.pop("_engine"))
        assert info.workload_id is not None
        state = item.get("State") or {}
        created = _time(item.get("Created")) or time.time()
        try:
            spec = _container_spec(item)
        except ValidationError as exc:
            store.insert_unknown(info.workload_id, driver="container", node=node, created_at=created,
                                 error=f"{_RECOVERED}: the container's settings are not a valid spec ({exc.errors()[0]['msg']})")
            done.add(info.workload_id)
            continue
        store.insert(WorkloadRecord(
            id=info.workload_id, spec=spec, driver="container", node=node, handle=info.handle, created_at=created,
            state=WorkloadState.RUNNING if info.running else WorkloadState.EXITED,
            started_at=_time(state.get("StartedAt")), exit_code=None if info.running else info.exit_code,
            finished_at=None if info.running else (_time(state.get("FinishedAt")) or time.time())))
        counts["running containers" if info.running else "ended containers"] += 1
        done.add(info.workload_id)
    workloads = data_dir / "workloads"
    for entry in sorted(workloads.iterdir()) if workloads.is_dir() else []:
        if not entry.is_dir() or not is_workload_id(entry.name) or entry.name in done:
            continue
        record = await _exec_record(entry, node)
        if record is not None:
            store.insert(record)
            counts["running exec" if record.state is WorkloadState.RUNNING else "ended exec"] += 1
            continue
        container = _looks_like_cri(entry / "output.log")
        store.insert_unknown(
            entry.name, driver="container" if container else "exec", node=node, created_at=entry.stat().st_mtime,
            error=f"{_RECOVERED} from {entry}: " + (
                "its container is gone" if container else "no exec supervisor state and no process of it")
            + ", so what ran and whether it still runs are unknown; its log is kept")
        counts["container gone, state unknown" if container else "exec, state unknown"] += 1
    return counts


def _looks_like_cri(log: Path) -> bool:
    try:
        with open(log, "rb") as fh:
            return _CRI_LINE.match(fh.readline(256)) is not None
    except OSError:
        return False


async def _exec_record(workdir: Path, node: str) -> WorkloadRecord | None:
    """A record from what the exec driver left: its supervisor's state, else a live process of the id."""
    from hypercore.runtime import supervisor as sv
    from hypercore.runtime.exec import ExecDriver
    from hypercore.store import WorkloadRecord
    from hypercore.workload import WorkloadSpec, WorkloadState

    driver, state = ExecDriver(), sv.read_state(workdir) or {}
    handle = await driver.locate(workdir.name, workdir / "output.log") if state else _process_of(workdir.name)
    if handle is None:
        return None
    running = driver.is_running(handle)
    limits = state.get("limits") if isinstance(state.get("limits"), dict) else {}
    command, env = _command_of(handle.get("pid"), handle.get("start_time")) if running else (None, {})
    try:
        spec = WorkloadSpec(command=command or UNKNOWN_COMMAND, env=env, cpu=limits.get("cpu") or 1.0,
                            mem=limits.get("mem_mb") or 256)
    except ValueError:
        spec = WorkloadSpec(command=UNKNOWN_COMMAND, cpu=limits.get("cpu") or 1.0, mem=limits.get("mem_mb") or 256)
    times = {k: state[k] if isinstance(state.get(k), (int, float)) else None for k in ("started_at", "ended_at")}
    created = times["started_at"] or workdir.stat().st_mtime
    code = state.get("exit_code")
    return WorkloadRecord(
        id=workdir.name, spec=spec, driver="exec", node=node, handle=handle, created_at=created,
        state=WorkloadState.RUNNING if running else WorkloadState.EXITED, started_at=times["started_at"],
        finished_at=None if running else times["ended_at"] or time.time(),
        exit_code=code if isinstance(code, int) and not running else None,
        error=None if running else (state.get("error") if isinstance(state.get("error"), str) else None))


def _proc_words(pid: int, name: str) -> list[str]:
    try:
        return [w.decode(errors="replace") for w in Path(f"/proc/{pid}/{name}").read_bytes().split(b"\0") if w]
    except OSError:
        return []


def _command_of(pid: Any, start_time: Any) -> tuple[str | None, dict[str, str]]:
    """The command and environment of a live workload leader, from /proc (`sh -c COMMAND`)."""
    from hypercore.runtime.isolation import same_process

    if not isinstance(pid, int) or not same_process(pid, start_time):
        return None, {}
    argv = _proc_words(pid, "cmdline")
    if argv and Path(argv[0]).name == "tini" and "--" in argv:  # the init of its PID namespace: `tini -g -- sh -c`
        argv = argv[argv.index("--") + 1:]
    command = argv[2] if len(argv) >= 3 and argv[0].endswith("sh") and argv[1] == "-c" else shlex.join(argv) or None
    env = dict(w.split("=", 1) for w in _proc_words(pid, "environ") if "=" in w)
    return command, {k: v for k, v in env.items() if k not in _EXEC_ENV}


def _process_of(workload_id: str) -> dict[str, Any] | None:
    """A handle for a workload from before the supervisor: its live process group leader, found in /proc."""
    from hypercore.runtime.isolation import read_proc_stat

    marker = f"HYPERCORE_WORKLOAD_ID={workload_id}"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = read_proc_stat(pid)
        if stat is not None and stat.alive and stat.pgrp == pid and marker in _proc_words(pid, "environ"):
            return {"pid": pid, "pgid": pid, "start_time": stat.start_time}
    return None
