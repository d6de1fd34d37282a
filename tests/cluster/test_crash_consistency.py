"""SIGKILL of an agent at random instants of a spawn: nothing leaks, nothing runs twice (real processes).

One node ("worker") runs every workload (exec and, with Podman, containers);
another ("front") takes the spawns and places them there. The worker's agent
is SIGKILLed at random moments after a spawn is sent, often while it records
or starts the workload, and restarted. A client that got no answer retries
with the same request id. Then, counted from the runtimes themselves (exec
copies in /proc, containers from Podman):

* every spawn runs exactly once, and the registry has it running (a start
  the agent died in is found by id; one that never got going is started by
  the retry);
* no copy runs that the registry does not have running (nothing leaked by a
  start whose handle was never stored).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from hypercore.devcluster import USER, Cluster, live_workload_processes, wait_for
from hypercore.placement import request_rank, user_request_id, workload_id_for
from tests.runtime.oci_image import ensure_test_image

ROOT = Path(__file__).resolve().parents[2]
COST = json.loads((ROOT / "examples" / "policies" / "cost-optimized.json").read_text())
ENGINE = shutil.which("podman") or "podman"
ROUNDS = 10
pytestmark = pytest.mark.podman


def running_containers(node: str) -> Counter[str]:
    """Running containers labelled for ``node``, per workload id (the engine's truth)."""
    out = subprocess.run([ENGINE, "ps", "--filter", f"label=hypercore.node={node}", "--format", "json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return Counter(c.get("Labels", {}).get("hypercore.workload") for c in json.loads(out or "[]"))


def post(node, body: dict) -> httpx.Response | Exception:  # type: ignore[no-untyped-def]
    try:
        return node.post("/v1/workloads", body, timeout=30)
    except httpx.HTTPError as exc:
        return exc


seen: list[str] = []


def at_kill(node, wid: str) -> str:  # type: ignore[no-untyped-def]
    """The row of ``wid`` in the dead agent's registry: how far the spawn got before the SIGKILL."""
    with contextlib.closing(sqlite3.connect(node.data_dir / "registry.sqlite3")) as db:
        row = db.execute("SELECT state, handle IS NOT NULL FROM workloads WHERE id = ?", (wid,)).fetchone()
    return "no row" if row is None else f"{row[0]}{'' if row[1] else ' without handle'}"


def answered(r: httpx.Response | Exception) -> httpx.Response | None:
    """A final answer: placed (201), found (200), or refused by every node (503)."""
    seen.append(f"{r.status_code} {r.text[:300]}" if isinstance(r, httpx.Response) else repr(r))
    return r if isinstance(r, httpx.Response) and r.status_code in (200, 201, 503) else None


def test_sigkill_at_random_instants_of_a_spawn_leaks_and_duplicates_nothing(cluster: Cluster) -> None:
    image = ensure_test_image(ENGINE)
    worker = cluster.add("worker", "--enable-exec", "--capacity-cpu", "64")
    front = cluster.add("front", "--disable-containers")
    cluster.wait_converged()
    seed = int(os.environ.get("HYPERCORE_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    # Request ids that the front node owns: the client's request never depends on the node being killed.
    request_ids = [r for r in (f"crash-{uuid.uuid4().hex}" for _ in range(400))
                   if request_rank(user_request_id(USER, r), ["worker", "front"])[0] == "front"][:ROUNDS]
    specs = [{"command": "sleep 300", "cpu": 0.1}, {"image_ref": image, "args": ["sleep", "300"], "cpu": 0.1}]
    outcome: dict[str, str] = {}
    killed_at: dict[str, str] = {}
    kinds: dict[str, str] = {}
    started = time.monotonic()
    for i, request_id in enumerate(request_ids):
        spec = specs[i % 2]
        wid = workload_id_for(user_request_id(USER, request_id))
        kinds[wid] = "exec" if "command" in spec else "container"
        body = {"spec": spec, "policy": COST, "request_id": request_id}
        answer: list[httpx.Response | Exception] = []
        sender = threading.Thread(target=lambda: answer.append(post(front, body)))
        sender.start()
        time.sleep(rng.uniform(0.0, 0.5))  # the instant of the kill is the point of the test
        worker.kill()
        killed_at[wid] = at_kill(worker, wid)
        sender.join(60)
        worker.restart([front.gossip_addr])
        first = answer[0]
        if isinstance(first, httpx.Response) and first.status_code in (200, 201):
            outcome[wid] = "answered before the kill"
            continue
        # No answer (the node died under the attempt): the client retries the same request.
        retry = wait_for(lambda: answered(post(front, body)), 30, f"an answer to the retry of {request_id}: {seen[-3:]}")
        outcome[wid] = f"retry: {retry.status_code}" + (f" {retry.text[:200]}" if retry.status_code == 503 else "")
    took = time.monotonic() - started

    def settled() -> dict[str, dict] | None:
        listed = {w["id"]: w for w in front.get("/v1/workloads").json()["workloads"] if w["node"] == "worker"}
        return listed if all(w["state"] not in ("pending",) for w in listed.values()) else None

    records = wait_for(settled, 30, "no pending record on the worker")
    processes = live_workload_processes()
    containers = running_containers("worker")
    summary = {wid: (kinds[wid], killed_at[wid], outcome[wid][:24], records.get(wid, {}).get("state"),
                     processes[wid] if kinds[wid] == "exec" else containers[wid]) for wid in kinds}
    why = f"seed {seed}, {took:.0f} s: " + json.dumps(summary, indent=1)
    for wid, kind in kinds.items():
        copies = processes[wid] if kind == "exec" else containers[wid]
        record = records.get(wid)
        assert record is not None, f"{wid} was sent but the registry does not know it; {why}"
        assert record["state"] == "running", f"{wid} is {record['state']}; {why}"
        assert copies == 1, f"{wid} is recorded running with {copies} copies; {why}"
    # Nothing of the worker's runs that its registry does not have running (the leak this test is about).
    running = {wid for wid, w in records.items() if w["state"] == "running"}
    worker_exec = {wid for wid in processes if (worker.data_dir / "workloads" / wid).is_dir()}
    assert worker_exec <= running and set(containers) <= running, why
    print(why)  # shown with -s: which rounds were cut where
    for wid in running:
        assert front.delete(f"/v1/workloads/{wid}").json()["state"] == "stopped"
    wait_for(lambda: not any(live_workload_processes()[w] for w in running) and not running_containers("worker"),
             20, "every workload to end")
