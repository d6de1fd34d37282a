"""What a spawn costs across regions: the geo test-bed, spawns with and without a request id. Root only.

    .venv/bin/python bench/geo_spawn.py [--spawns 12] [--json]

Starts `hypercore dev up --topology examples/topologies/three-regions.json` (7 nodes in 3 regions, RTT eu-us
80 ms, eu-ap 160 ms, us-ap 120 ms, 2 ms inside a region, 1 % loss on ap's links) and, from the first node of
each region (where users ask; it runs nothing itself), sends --spawns spawns of each kind under the
low-latency policy (`sleep 60`, each stopped after), in turn: with a request id that names the node asked as
its home (`<uuid>@<node>`, what `hypercore cluster spawn` sends since the thirteenth session), with one that
names none (an API client's own id, placed by the owner its hash picks), and without one (no exactly-once).
Prints, per region asked, p50/p90 of each and where they landed, and for the spawns with a request id the
protocol's floor: the round trips its messages must make on connections that are already open
(docs/placement-protocol.md, "The request path"):

    home id:    max RTT(asked, buddy) + RTT(asked, chosen node)
    hashed id:  RTT(asked, owner) + max RTT(owner, buddy) + RTT(owner, chosen node)

(the forward, the claim on the request id's two other holders, the attempt; a term is 0 when both ends are
the same node). The holders come from the same ranking the agents use (placement.directory.holders_of, over
the user-scoped request id). A spawn without a request id is placed by the node asked: RTT(asked, chosen).
Also printed, as what two other designs would make of the hashed-id spawns (neither is built; docs/scale.md):

    asker attempts:  RTT(asked, owner) + max RTT(owner, buddy) + RTT(asked, chosen)
    asker claims:    the second-nearest holder's RTT from the node asked (a majority of 3) + RTT(asked, chosen)
The test-bed is stopped (SIGTERM) in a finally.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # bench/select.py shadows `select`

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import jwt  # noqa: E402

from hypercore.placement.directory import holders_of  # noqa: E402
from hypercore.placement.ids import user_request_id  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "examples" / "topologies" / "three-regions.json"
POLICY = ROOT / "examples" / "policies" / "low-latency.json"
SPEC = {"command": "sleep 60", "cpu": 0.1, "mem": 16}
ASKED = ("eu-1", "us-1", "ap-1")
SETTLE_S = 10.0  # after the state file: the first probe rounds and coordinates


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def rtt_table(topology: dict[str, Any]) -> dict[tuple[str, str], float]:
    table = {}
    for link in topology["links"]:
        a, b = link["between"]
        table[(a, b)] = table[(b, a)] = float(link["rtt_ms"])
    return table


def start_bed(tmp: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    state_file = tmp / "state.json"
    up = subprocess.Popen([sys.executable, "-m", "hypercore.cli", "dev", "up", "--topology", str(TOPOLOGY),
                           "--state-file", str(state_file), "--dir", str(tmp / "bed")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while not state_file.exists():
        if up.poll() is not None or time.monotonic() > deadline:
            up.kill()
            raise SystemExit(f"hypercore dev up failed:\n{up.communicate(timeout=30)[0]}")
        time.sleep(0.5)
    return up, json.loads(state_file.read_text())


def run(spawns: int) -> dict[str, Any]:
    topology = json.loads(TOPOLOGY.read_text())
    rtts = rtt_table(topology)
    policy = json.loads(POLICY.read_text())
    with tempfile.TemporaryDirectory(prefix="hc-geo-spawn-") as tmp:
        up, state = start_bed(Path(tmp))
        try:
            region = {n["name"]: n["region"] for n in state["nodes"]}
            api = {n["name"]: n["api"] for n in state["nodes"]}
            user = jwt.decode(state["token"], options={"verify_signature": False})["sub"]

            def rtt(a: str, b: str) -> float:
                return 0.0 if a == b else rtts[(region[a], region[b])]

            time.sleep(SETTLE_S)
            out: dict[str, Any] = {}
            headers = {"Authorization": f"Bearer {state['token']}"}
            with httpx.Client(verify=state["ca_file"], headers=headers, timeout=60) as client:
                seen = client.get(f"{api['us-1']}/v1/nodes").json()["nodes"]
                print("as us-1 measures (latency / jitter / loss): " + ", ".join(
                    f"{n['name']} {n.get('latency_ms')} / {n.get('jitter_ms')} / {n.get('packet_loss')}"
                    for n in seen if n["name"] != "us-1"), flush=True)
                for asked in ASKED:
                    cases: dict[str, list[float]] = {"home": [], "hashed": [], "none": []}
                    floors: dict[str, list[float]] = {"home": [], "hashed": []}
                    others: dict[str, list[float]] = {"asker_attempts": [], "asker_claims": []}
                    landed: dict[str, int] = {}
                    for i in range(3 * spawns):
                        kind = ("home", "hashed", "none")[i % 3]
                        body: dict[str, Any] = {"spec": SPEC, "policy": policy}
                        rid = f"{uuid.uuid4()}@{asked}" if kind == "home" else f"geo-{uuid.uuid4().hex}"
                        if kind != "none":
                            body["request_id"] = rid
                        t0 = time.perf_counter()
                        r = client.post(f"{api[asked]}/v1/workloads", json=body)
                        ms = (time.perf_counter() - t0) * 1000
                        if r.status_code != 201:
                            raise SystemExit(f"spawn at {asked} failed: HTTP {r.status_code} {r.text[:300]}")
                        node = r.json()["node"]
                        landed[node] = landed.get(node, 0) + 1
                        cases[kind].append(ms)
                        if kind != "none":
                            owner, *buddies = holders_of(user_request_id(user, rid), list(api), 3)
                            claim = max(rtt(owner, b) for b in buddies)
                            floors[kind].append(rtt(asked, owner) + claim + rtt(owner, node))
                        if kind == "hashed":
                            others["asker_attempts"].append(rtt(asked, owner) + claim + rtt(asked, node))
                            majority = sorted(rtt(asked, h) for h in (owner, *buddies))[1]
                            others["asker_claims"].append(majority + rtt(asked, node))
                        client.delete(f"{api[asked]}/v1/workloads/{r.json()['id']}")
                    home, hashed, without = cases["home"], cases["hashed"], cases["none"]
                    print(f"asked at {asked} ({region[asked]}): home id p50 {statistics.median(home):.0f} ms, "
                          f"p90 {pct(home, 0.9):.0f} ms (floor {statistics.median(floors['home']):.0f}); "
                          f"hashed id p50 {statistics.median(hashed):.0f} ms, p90 {pct(hashed, 0.9):.0f} ms (floor "
                          f"{statistics.median(floors['hashed']):.0f}; if the asker attempted "
                          f"{statistics.median(others['asker_attempts']):.0f}, if it claimed "
                          f"{statistics.median(others['asker_claims']):.0f}); "
                          f"without p50 {statistics.median(without):.0f} ms, p90 {pct(without, 0.9):.0f} ms; landed "
                          + ", ".join(f"{n} {c}" for n, c in sorted(landed.items())), flush=True)
                    out[asked] = {"home_p50_ms": round(statistics.median(home), 1),
                                  "home_p90_ms": round(pct(home, 0.9), 1),
                                  "home_floor_p50_ms": round(statistics.median(floors["home"]), 1),
                                  "with_request_id_p50_ms": round(statistics.median(hashed), 1),
                                  "with_request_id_p90_ms": round(pct(hashed, 0.9), 1),
                                  "floor_p50_ms": round(statistics.median(floors["hashed"]), 1),
                                  "floor_asker_attempts_p50_ms": round(statistics.median(others["asker_attempts"]), 1),
                                  "floor_asker_claims_p50_ms": round(statistics.median(others["asker_claims"]), 1),
                                  "without_p50_ms": round(statistics.median(without), 1),
                                  "without_p90_ms": round(pct(without, 0.9), 1), "landed": landed}
            return out
        finally:
            up.send_signal(signal.SIGTERM)
            try:
                up.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                up.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spawns", type=int, default=12, help="spawns of each kind per region asked")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/geo_spawn.py needs root: the geo test-bed makes network namespaces and TUN devices")
    out = run(args.spawns)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
