"""Scale of a real local cluster: N agents (each with its own serf) on loopback, all mutual TLS.

    .venv/bin/python bench/scale.py --nodes 10 [--json] [--spawns 30] [--serf-profile lan]

Measures, in this order:
  converge_s             last agent started -> every observer sees every node alive with a
                         verified beacon and measured links (for N > 10 a sample of 5
                         observers: first, last and 3 spread between; every node is checked
                         as a target);
  idle_cpu_pct_per_node  utime+stime of each agent plus its serf child(ren) from /proc over a
                         30 s idle window (30 s after convergence), in % of one core, averaged per node (agent and serf
                         are printed apart); Serf runs with --serf-profile (default `lan`, the
                         agent's default: what a deployment runs; devcluster's tests use `local`);
  tag_updates_per_s      cluster-wide: new signatures carried by Serf `member-update` events on
                         node 0's serf RPC stream over one refresh period of idle (at least 60 s;
                         the period grows with N: hypercore.beacon.tags.refresh_period); members
                         re-sent in coalesced events without a new signature are not counted (cross-check:
                         members whose `sig` tag changed between two members() reads, printed only);
  rpc_timeouts           lines with "cannot follow members in serf" or "timeout" in all agents' logs (a
                         tag publication whose broadcast Serf was slow to send is printed apart: the tags
                         were set; membership.agent.SerfAgent.publish_tags);
  rss_mb_per_agent       mean VmRSS of the agent processes (serf's own RSS is printed only);
  spawn_cpu_ms           CPU time of every agent and Serf during the back-to-back spawns, less their
                         idle rate (from the idle window) over as long, per spawn: what a spawn costs the
                         whole cluster (supervisors and workloads not counted);
  spawn_p50_ms/p90_ms    --spawns sequential spawns with request ids through node 0
                         (`sleep 300`, cpu 0.01, mem 1), back to back, stopped afterwards; the ids
                         name node 0 as their home (`<uuid>@n000`), as `hypercore cluster spawn`
                         makes them, so node 0 places them (no forward);
                         spawn_hashed_p50_ms / p90_ms: as many more with ids that name no home (as an
                         API client may send its own), placed by the owner their hash picks;
                         spawn_start_ms: the chosen nodes' mean time from an attempt's arrival to
                         the workload running (hypercore_workload_start_seconds);
                         spawn_p50_paced_ms / spawn_start_paced_ms: the same for 20 spawns 1.5 s
                         apart (each spawn's beacon news is gossiped to every node: on one machine
                         that work competes with the next spawn unless it has time in between);
  requests_per_spawn     node-to-node HTTP requests per spawn, COUNTED by the agents
                         (hypercore_node_requests_total, summed over every node, on the routes a
                         spawn uses: forward, directory claims and pushes, attempts, copy lookups),
                         over the spawns plus the directory's 5 s flush after them; failover's
                         manifest pushes in the same window are printed apart (they follow the
                         registry's changes, at most one per buddy per 0.5 s, not each spawn);
  connections_per_spawn  new node-to-node connections per spawn over the same window, counted by the
                         nodes that accept them (hypercore_peer_connections_total): each is a mutual-TLS
                         handshake (about 2 ms of CPU at its two ends on a quiet machine);
  dry_run_per_s          POST /v1/placements answered per second by node 0 with 64 concurrent
                         clients for 10 s (the clients run on the same 2 cores).
Also printed (and in the JSON as spawn_<phase>_ms): where the back-to-back spawns' time went, from the
placing node's log timestamps (ms) and the client's clock: forward_decide, claim, attempt, back.
With --json the last line is one JSON object with those keys plus `nodes`.
Every process is ended in a finally (also on Ctrl-C).
"""

from __future__ import annotations

import os
import sys

# bench/select.py would shadow the standard library's `select` module: drop this directory from sys.path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import asyncio
import datetime
import json
import re
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from hypercore.beacon.tags import refresh_period
from hypercore.devcluster import Cluster, Node, rss_kb, wait_for
from hypercore.membership.rpc import SerfRPC
from hypercore.membership.rpc_types import SerfTimeoutError

FLAGS = ["--enable-exec", "--disable-containers", "--capacity-cpu", "1000", "--spawn-rate", "1000",
         "--spawn-burst", "1000", "--probe-interval", "2"]
SPEC = {"command": "sleep 300", "cpu": 0.01, "mem": 1}
IDLE_S = 30.0
SETTLE_S = 30.0
TAG_WINDOW_S = 60.0
DRY_RUN_S = 10.0
PACED_SPAWNS = 20
PACE_S = 1.5
PACE_SETTLE_S = 10.0  # after the back-to-back spawns' stops, before the paced ones
DRY_RUN_CLIENTS = 64
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(msg: str) -> None:
    print(msg, flush=True)


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            out.extend(int(c) for c in text)
    except OSError:
        pass
    return out


def cpu_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def rss_mb(pid: int) -> float:
    return rss_kb(pid) / 1024


def serf_children(node: Node) -> list[int]:
    assert node.proc is not None
    out = []
    for c in children(node.proc.pid):
        try:
            if Path(f"/proc/{c}/comm").read_text().strip() == "serf":
                out.append(c)
        except OSError:
            continue
    return out


class UpdateCounter:
    """Members carried by `member-update` events on one serf agent's RPC stream, in a thread of its own."""

    def __init__(self, node: Node) -> None:
        self.host, self.port = "127.0.0.1", node.rpc_port
        self.key = json.loads((node.data_dir / "serf" / "serf-agent.json").read_text())["rpc_auth"]
        self.events = 0
        self.members = 0
        self.sig_changes = 0
        self.changes = 0  # member-update events that carried a new signature: real tag updates
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        try:
            async with await SerfRPC.connect(self.host, self.port, self.key) as rpc:
                before = {m.name: m.tags.get("sig") for m in await rpc.members()}
                last = dict(before)
                stream = await rpc.stream("member-update")
                self._ready.set()
                while not self._stop.is_set():
                    try:
                        event = await stream.next(timeout=0.5)
                    except SerfTimeoutError:
                        continue
                    self.events += 1
                    for member in event.get("Members") or []:
                        self.members += 1
                        # Serf re-sends members in coalesced events: only a new signature is a tag update.
                        if last.get(member.name) != member.tags.get("sig"):
                            last[member.name] = member.tags.get("sig")
                            self.changes += 1
                await stream.stop(timeout=2.0)
                after = {m.name: m.tags.get("sig") for m in await rpc.members()}
                self.sig_changes = sum(1 for n, s in after.items() if n in before and before[n] != s)
        except BaseException as exc:  # reported by the caller
            self.error = exc
            self._ready.set()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)
        if self.error is not None:
            raise RuntimeError(f"serf stream: {self.error!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


async def dry_runs(node: Node, clients: int, seconds: float) -> tuple[int, int]:
    """(answered 200, other answers) for POST /v1/placements from `clients` concurrent loops."""
    ok = bad = 0
    deadline = time.monotonic() + seconds
    headers = node.headers()
    connector = aiohttp.TCPConnector(ssl=node.pki.verify(), limit=clients)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        async def loop() -> None:
            nonlocal ok, bad
            while time.monotonic() < deadline:
                try:
                    async with session.post(f"{node.url}/v1/placements", json={"spec": SPEC},
                                            timeout=aiohttp.ClientTimeout(total=30)) as r:
                        await r.read()
                        if r.status == 200:
                            ok += 1
                        else:
                            bad += 1
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    bad += 1

        await asyncio.gather(*(loop() for _ in range(clients)))
    return ok, bad


# The routes a spawn with a request id uses (tests/cluster/test_directory.py counts the same ones).
SPAWN_ROUTES = ("POST /v1/local/spawn", "PUT /v1/local/directory", "GET /v1/local/directory/{key}",
                "POST /v1/local/workloads", "GET /v1/local/workloads/{id}", "GET /v1/local/workloads",
                "DELETE /v1/local/workloads/{id}", "GET /v1/local/placements/{id}")
MANIFEST_ROUTE = "PUT /v1/local/replicas/{owner}"


Scrape = list[list[Any]]  # each node's metric families, read at one moment


def scrape(cluster: Cluster, names: list[str]) -> Scrape:
    """Every node's /metrics, read once: the figures taken at one moment come from one read of each node."""
    from prometheus_client.parser import text_string_to_metric_families

    return [list(text_string_to_metric_families(cluster[name].get("/metrics").text)) for name in names]


def metric_sums(scraped: Scrape, family_name: str, suffixes: tuple[str, ...], by: str | None = None) -> dict[str, float]:
    """Samples of one metric family summed over the scraped nodes: by sample suffix, or by label `by` as well."""
    out: dict[str, float] = {}
    for families in scraped:
        for family in families:
            if family.name != family_name:
                continue
            for sample in family.samples:
                suffix = next((x for x in suffixes if sample.name.endswith(x)), None)
                if suffix is not None:
                    key = sample.labels[by] if by else suffix
                    out[key] = out.get(key, 0.0) + sample.value
    return out


def node_requests(scraped: Scrape) -> dict[str, int]:
    """hypercore_node_requests_total summed over the nodes, by route."""
    return {k: int(v) for k, v in metric_sums(scraped, "hypercore_node_requests", ("_total",), "route").items()}


def peer_connections(scraped: Scrape) -> float:
    """hypercore_peer_connections_total summed over the nodes: connections nodes opened to each other (handshakes)."""
    return metric_sums(scraped, "hypercore_peer_connections", ("_total",)).get("_total", 0.0)


def start_seconds(scraped: Scrape) -> tuple[float, float]:
    """(sum, count) of hypercore_workload_start_seconds over the nodes: the chosen nodes' side of spawns."""
    sums = metric_sums(scraped, "hypercore_workload_start_seconds", ("_sum", "_count"))
    return sums.get("_sum", 0.0), sums.get("_count", 0.0)


def mean_start_ms(before: tuple[float, float], after: tuple[float, float]) -> float:
    count = after[1] - before[1]
    return (after[0] - before[0]) / count * 1000 if count else float("nan")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


_LOG_TIME = re.compile(r"^time=(\S+?)Z? ")


def _log_time(line: str) -> float:
    stamp = _LOG_TIME.match(line)
    assert stamp is not None, line
    return datetime.datetime.fromisoformat(stamp.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp()


def spawn_phases(logs: dict[str, list[str]], sent: list[tuple[float, float, str]]) -> dict[str, float]:
    """Where the spawns' time went, p50 of each phase in ms, from the placing node's log lines (ms timestamps)
    and the client's clock (the same machine): the forward and the decision (sent -> "policy-based node
    selection completed"), the claim on the holders (-> "attempting to spawn"), the attempt, its hop and the
    start on the chosen node (-> "successfully spawned"), and the answer's way back to the client."""
    phases: dict[str, list[float]] = {"forward_decide": [], "claim": [], "attempt": [], "back": []}
    where = {}
    for node, lines in logs.items():
        for k, line in enumerate(lines):
            if "successfully spawned" in line and (m := re.search(r" id=(\S+)", line)):
                where[m.group(1)] = (node, k)
    for t0, t1, wid in sent:
        if wid not in where:
            continue
        node, k = where[wid]
        lines = logs[node]
        att = next((j for j in range(k, -1, -1) if "attempting to spawn" in lines[j]), None)
        sel = next((j for j in range(att or 0, -1, -1) if "policy-based node selection completed" in lines[j]), None)
        if att is None or sel is None:
            continue
        decided, claimed, placed = _log_time(lines[sel]), _log_time(lines[att]), _log_time(lines[k])
        for key, value in (("forward_decide", decided - t0), ("claim", claimed - decided),
                           ("attempt", placed - claimed), ("back", t1 - placed)):
            phases[key].append(value * 1000)
    return {key: statistics.median(values) for key, values in phases.items() if values}


def run(n: int, spawns: int, root: Path, profile: str = "lan") -> dict[str, Any]:
    cluster = Cluster(root)
    flags = [*FLAGS, "--serf-profile", profile]  # the last --serf-profile wins over devcluster's `local`
    try:
        names = [f"n{i:03d}" for i in range(n)]
        t0 = time.monotonic()
        cluster.add(names[0], *flags)  # the seed: every other node joins through it
        for name in names[1:]:
            cluster.add(name, *flags, wait=False)
        t_last = time.monotonic()
        for name in names[1:]:
            cluster[name].wait_healthy(timeout=60 + 3 * n)
        say(f"{n} agents started in {t_last - t0:.1f} s, all /healthz in {time.monotonic() - t0:.1f} s")

        if n <= 10:
            observers = names
        else:
            observers = [names[i * (n - 1) // 4] for i in range(5)]
        wait_for(lambda: cluster.converged(observers, names), 120 + 6 * n, "convergence", interval=0.5)
        converge_s = time.monotonic() - t_last
        say(f"converge_s {converge_s:.1f} (observers: {'all' if n <= 10 else ', '.join(observers)})")

        # Idle window: CPU (IDLE_S after SETTLE_S), tag updates (one beacon refresh period, at least
        # TAG_WINDOW_S: a shorter window would alias; in one period every node refreshes once, whatever its phase).
        agents = [cluster[x].proc.pid for x in names]  # type: ignore[union-attr]
        serfs = {x: serf_children(cluster[x]) for x in names}
        counter = UpdateCounter(cluster[names[0]])
        counter.start()
        t_tags = time.monotonic()
        time.sleep(SETTLE_S)  # steady state: the joins' probes, coordinate reads and first beacons are over
        a0 = {x: cpu_ticks(cluster[x].proc.pid) for x in names}  # type: ignore[union-attr]
        s0 = {x: sum(cpu_ticks(s) for s in serfs[x]) for x in names}
        w0 = time.monotonic()
        time.sleep(IDLE_S)
        a1 = {x: cpu_ticks(cluster[x].proc.pid) for x in names}  # type: ignore[union-attr]
        s1 = {x: sum(cpu_ticks(s) for s in serfs[x]) for x in names}
        window = time.monotonic() - w0
        c0 = {x: a0[x] + s0[x] for x in names}
        c1 = {x: a1[x] + s1[x] for x in names}
        agent_pct = sum(a1[x] - a0[x] for x in names) / CLK_TCK / window * 100 / n
        serf_pct = sum(s1[x] - s0[x] for x in names) / CLK_TCK / window * 100 / n
        time.sleep(max(0.0, max(TAG_WINDOW_S, refresh_period(n)) - (time.monotonic() - t_tags)))
        counter.stop()
        tag_window = time.monotonic() - t_tags
        per_node = [(c1[x] - c0[x]) / CLK_TCK / window * 100 for x in names]
        idle_cpu = statistics.mean(per_node)
        tag_updates = counter.changes / tag_window
        say(f"idle CPU per node (agent+serf, serf profile {profile}): mean {idle_cpu:.2f} % (agent {agent_pct:.2f} %, "
            f"serf {serf_pct:.2f} %), max {max(per_node):.2f} % of one core; total {sum(per_node):.1f} %; "
            f"load average {os.getloadavg()[0]:.1f}")
        say(f"member-update events {counter.events} carrying {counter.members} members, {counter.changes} new "
            f"signatures in {tag_window:.1f} s = {tag_updates:.2f}/s (N/30 = {n / 30:.2f}/s; refresh period "
            f"{refresh_period(n):.0f} s: N/P = {n / refresh_period(n):.2f}/s); "
            f"members whose sig changed: {counter.sig_changes}")
        rss_agents = [rss_mb(p) for p in agents]
        rss_serf = [sum(rss_mb(s) for s in serfs[x]) for x in names]
        say(f"VmRSS agent mean {statistics.mean(rss_agents):.0f} MB, serf mean {statistics.mean(rss_serf):.0f} MB")

        # Spawns through node 0, sequential, with request ids: back to back, then PACED_SPAWNS of them
        # PACE_S apart (each spawn's beacon news is gossiped to every node, and on one machine the whole
        # cluster's work for it competes with the next spawn; paced, that work is done in between).
        first = cluster[names[0]]
        placed_on: dict[str, int] = {}
        import httpx
        from hypercore.placement.directory_sync import FLUSH_S

        sent: list[tuple[float, float, str]] = []  # (sent, answered, workload id), wall clock: for spawn_phases

        def spawn_all(client: httpx.Client, count: int, pace: float, home: bool = True) -> tuple[list[float], list[str]]:
            times, ids = [], []
            for _ in range(count):
                # As `hypercore cluster spawn` makes them (the node asked is the home), or an id of one's own.
                body = {"spec": SPEC, "request_id": f"{uuid.uuid4()}@{first.name}" if home else f"scale-{uuid.uuid4().hex}"}
                start, wall = time.perf_counter(), time.time()
                r = client.post(f"{first.url}/v1/workloads", json=body)
                times.append((time.perf_counter() - start) * 1000)
                if r.status_code == 201 and pace == 0.0 and home:
                    sent.append((wall, time.time(), r.json()["id"]))
                if r.status_code != 201:
                    raise RuntimeError(f"spawn failed: HTTP {r.status_code} {r.text[:300]}")
                ids.append(r.json()["id"])
                placed_on[r.json()["node"]] = placed_on.get(r.json()["node"], 0) + 1
                time.sleep(pace)
            return times, ids

        before = scrape(cluster, names)
        counted_before, started_before, connections_before = node_requests(before), start_seconds(before), peer_connections(before)
        procs = agents + [s for x in names for s in serfs[x]]
        idle_ticks_per_s = sum(c1[x] - c0[x] for x in names) / window
        with httpx.Client(verify=first.pki.verify(), headers=first.headers(), timeout=60) as client:
            ticks0, t_spawns = sum(cpu_ticks(pid) for pid in procs), time.monotonic()
            times, ids = spawn_all(client, spawns, 0.0)
            busy = sum(cpu_ticks(pid) for pid in procs) - ticks0 - idle_ticks_per_s * (time.monotonic() - t_spawns)
            spawn_cpu_ms = busy / CLK_TCK / spawns * 1000
            started_after = start_seconds(scrape(cluster, names))
            time.sleep(FLUSH_S + 1)  # what the directory sends after the spawns counts too
            after = scrape(cluster, names)
            counted_after, connections_after = node_requests(after), peer_connections(after)
            for wid in ids:
                client.delete(f"{first.url}/v1/workloads/{wid}")
            time.sleep(PACE_SETTLE_S)
            hashed, hashed_ids = spawn_all(client, spawns, 0.0, home=False)
            for wid in hashed_ids:
                client.delete(f"{first.url}/v1/workloads/{wid}")
            time.sleep(PACE_SETTLE_S)
            paced_before = start_seconds(scrape(cluster, names))
            paced, paced_ids = spawn_all(client, PACED_SPAWNS, PACE_S)
            paced_after = start_seconds(scrape(cluster, names))
            for wid in paced_ids:
                client.delete(f"{first.url}/v1/workloads/{wid}")
        p50, p90 = statistics.median(times), pct(times, 0.9)
        start_ms, paced_start_ms = mean_start_ms(started_before, started_after), mean_start_ms(paced_before, paced_after)
        paced_p50 = statistics.median(paced)
        say(f"spawn p50 {p50:.1f} ms, p90 {p90:.1f} ms over {spawns} back to back (start on the chosen node "
            f"{start_ms:.1f} ms on average); {PACED_SPAWNS} spawns {PACE_S:g} s apart: p50 {paced_p50:.1f} ms, "
            f"p90 {pct(paced, 0.9):.1f} ms (start {paced_start_ms:.1f} ms); placed on {len(placed_on)} nodes")
        say(f"with request ids that name no home (placed by the owner their hash picks): p50 "
            f"{statistics.median(hashed):.1f} ms, p90 {pct(hashed, 0.9):.1f} ms over {spawns} back to back")
        say(f"CPU per spawn, every agent and Serf together, above their idle rate: {spawn_cpu_ms:.1f} ms "
            f"(the supervisors and workloads not counted)")
        delta = {k: counted_after.get(k, 0) - counted_before.get(k, 0) for k in counted_after}
        spawn_delta = {k: v for k, v in delta.items() if k in SPAWN_ROUTES and v}
        requests_per_spawn = sum(spawn_delta.values()) / spawns
        say(f"requests_per_spawn (counted) {requests_per_spawn:.2f}: "
            + ", ".join(f"{k} {v / spawns:.2f}" for k, v in sorted(spawn_delta.items()))
            + f"; failover manifest pushes in the same window {delta.get(MANIFEST_ROUTE, 0) / spawns:.2f} per spawn")
        connections_per_spawn = (connections_after - connections_before) / spawns
        say(f"new node-to-node connections (mutual-TLS handshakes) per spawn, counted by the accepting nodes over "
            f"the same window: {connections_per_spawn:.2f}")

        ok, bad = asyncio.run(dry_runs(first, DRY_RUN_CLIENTS, DRY_RUN_S))
        dry = ok / DRY_RUN_S
        say(f"dry runs: {ok} answered ({bad} errors) in {DRY_RUN_S:.0f} s = {dry:.0f}/s")

        logs = {x: cluster[x].log().splitlines() for x in names}
        phases = spawn_phases(logs, sent)
        say("where the back-to-back spawns' time went (p50, from the placing node's log): "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in phases.items())
            + " (forward_decide: to the request id's owner, none for these ids (node 0 is their home), and its "
              "decision; claim: on the two other holders; "
              "attempt: to the chosen node and the start there; back: the answer to the client)")

        timeouts = slow_broadcasts = 0
        for x in names:
            for line in logs[x]:
                low = line.lower()
                if "serf is slow to gossip" in low:
                    slow_broadcasts += 1  # Serf set the tags; its broadcast waited (not an RPC that failed)
                elif "cannot follow members in serf" in low or "timeout" in low or "timed out" in low:
                    timeouts += 1
                    if timeouts <= 5:
                        say(f"  timeout at {x}: {line[:300]}")
        say(f"rpc_timeouts {timeouts}; tag publications whose broadcast Serf was slow to send: {slow_broadcasts}")

        return {
            "nodes": n,
            "serf_profile": profile,
            "idle_cpu_pct_agent": round(agent_pct, 3),
            "idle_cpu_pct_serf": round(serf_pct, 3),
            "converge_s": round(converge_s, 2),
            "idle_cpu_pct_per_node": round(idle_cpu, 3),
            "tag_updates_per_s": round(tag_updates, 3),
            "rpc_timeouts": timeouts,
            "rss_mb_per_agent": round(statistics.mean(rss_agents), 1),
            "spawn_p50_ms": round(p50, 2),
            "spawn_p90_ms": round(p90, 2),
            "spawn_start_ms": round(start_ms, 2),
            "spawn_hashed_p50_ms": round(statistics.median(hashed), 2),
            "spawn_hashed_p90_ms": round(pct(hashed, 0.9), 2),
            "spawn_p50_paced_ms": round(paced_p50, 2),
            "spawn_start_paced_ms": round(paced_start_ms, 2),
            "spawn_cpu_ms": round(spawn_cpu_ms, 1),
            "requests_per_spawn": round(requests_per_spawn, 2),
            "connections_per_spawn": round(connections_per_spawn, 2),
            "dry_run_per_s": round(dry, 1),
            **{f"spawn_{k}_ms": round(v, 1) for k, v in phases.items()},
        }
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--spawns", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--serf-profile", choices=["lan", "local", "wan"], default="lan",
                        help="Serf's timing profile (default: lan, the agent's default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hc-scale-") as tmp:
        try:
            result = run(args.nodes, args.spawns, Path(tmp), args.serf_profile)
        except KeyboardInterrupt:
            sys.exit("interrupted (every process was ended)")
    if args.json:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
