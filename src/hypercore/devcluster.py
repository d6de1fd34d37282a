"""Local multi-node clusters on loopback, for the demo, the benchmarks and the tests.

Each node is a real `hypercore cluster` process with its own real `serf agent`,
data dir and ports. close() ends every agent this module started (by pid) and
every workload process group its nodes recorded, even after a failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from hypercore.runtime.exec import ExecDriver, read_proc_stat

HYPERCORE = [sys.executable, "-m", "hypercore.cli"]
TOKEN = "test-cluster-token"


def free_port() -> int:
    """A loopback port free for both TCP and UDP (serf gossips over both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("could not find a free TCP+UDP port on 127.0.0.1")


def live_workload_processes(command: str = "sleep") -> Counter[str]:
    """Live processes named `command`, counted per workload id found in their environment.

    Read from /proc — the runtime's truth — so that tests count copies without
    trusting any registry.
    """
    counts: Counter[str] = Counter()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/comm").read_text().strip() != command:
                continue
            stat = read_proc_stat(int(entry))
            if stat is None or not stat.alive:
                continue
            for item in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                if item.startswith(b"HYPERCORE_WORKLOAD_ID="):
                    counts[item.split(b"=", 1)[1].decode()] += 1
        except OSError:
            continue
    return counts


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Node:
    def __init__(self, name: str, root: Path, extra: list[str], token: str | None) -> None:
        self.name = name
        self.data_dir = root / name
        self.gossip_port = free_port()
        self.rpc_port = free_port()
        self.http_port = free_port()
        self.token = token
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / f"{name}.log"

    @property
    def gossip_addr(self) -> str:
        return f"127.0.0.1:{self.gossip_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def args(self, join: list[str]) -> list[str]:
        args = [
            "cluster", *join,
            "--node-name", self.name,
            "--data-dir", str(self.data_dir),
            "--cluster-bind-addr", self.gossip_addr,
            "--serf-rpc-addr", f"127.0.0.1:{self.rpc_port}",
            "--http-bind-addr", f"127.0.0.1:{self.http_port}",
            "--serf-profile", "local",
            *self.extra,
        ]
        if self.token:
            args += ["--cluster-token", self.token]
        return args

    def start(self, join: list[str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for key in [k for k in env if k.startswith("HYPERCORE_")]:
            env.pop(key)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*HYPERCORE, *self.args(join)], stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def wait_healthy(self, timeout: float = 20.0) -> None:
        def ok() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"node {self.name} exited with {self.proc.returncode}:\n{self.log()}")
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200

        wait_for(ok, timeout, f"{self.name} /healthz")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=self.headers(), timeout=30, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers=self.headers(), timeout=60, **kw)

    def delete(self, path: str) -> httpx.Response:
        return httpx.delete(f"{self.url}{path}", headers=self.headers(), timeout=30)

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["name"]: n for n in self.get("/v1/nodes").json()["nodes"]}

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def restart(self, join: list[str] | None = None) -> None:
        """Start the node again with the same name, ports and data dir."""
        assert self.proc is None or self.proc.poll() is not None, "stop or kill the node first"
        self.start(join or [])
        self.wait_healthy()

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def workload_handles(self) -> list[dict[str, Any]]:
        db = self.data_dir / "registry.sqlite3"
        if not db.exists():
            return []
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT handle FROM workloads WHERE handle IS NOT NULL").fetchall()
        out = []
        for (handle,) in rows:
            try:
                h = json.loads(handle)
            except (TypeError, ValueError):
                continue
            if isinstance(h, dict) and (isinstance(h.get("pgid"), int) or "container_id" in h):
                out.append(h)
        return out


class Cluster:
    def __init__(self, root: Path, token: str | None = TOKEN) -> None:
        self.root = root
        self.token = token
        self.nodes: dict[str, Node] = {}

    def add(self, name: str, *extra: str, join: bool = True, token: str | None = "default", wait: bool = True) -> Node:
        node = Node(name, self.root, list(extra), self.token if token == "default" else token)
        seeds = [n.gossip_addr for n in self.nodes.values()][:1] if join else []
        self.nodes[name] = node
        node.start(seeds)
        if wait:
            node.wait_healthy()
        return node

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def wait_converged(self, timeout: float = 30.0, names: list[str] | None = None) -> None:
        """Every listed node sees every listed node alive with verified beacon data."""
        names = names or list(self.nodes)

        def converged() -> bool:
            for name in names:
                view = self.nodes[name].nodes()
                for other in names:
                    n = view.get(other)
                    if n is None or n["status"] != "alive" or n["beacon_id"] is None or n["latency_ms"] is None:
                        return False
            return True

        wait_for(converged, timeout, f"cluster {names} to converge with beacons")

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop(timeout=10)
        # Workloads outlive their agent by design; end the ones our nodes started.
        driver = ExecDriver()
        for node in self.nodes.values():
            for handle in node.workload_handles():
                if "container_id" in handle:
                    subprocess.run([handle.get("engine") or "podman", "rm", "-f", "--time", "0", handle["container_id"]],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
                elif driver.is_running(handle):
                    try:
                        os.killpg(handle["pgid"], signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
