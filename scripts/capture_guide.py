"""Run docs/guide.md's commands for real and capture what they print.

    python scripts/capture_guide.py           # run everything, print each captured block
    python scripts/capture_guide.py --write   # the same, then put the blocks into docs/guide.md

It starts the guide's three-node cluster on loopback (hypercore.devcluster: real
serf agents and `hypercore cluster` processes, a cluster CA, mutual TLS, a user
token) with the demo's nodes — budget ($0.006/GB, reputation 0.70), standard
($0.020, 0.93) and premium ($0.045, 0.99) — and runs, as a user of `standard`,
the guide's commands: validate and explain the five example policies, `cluster
metrics`, a spawn under each policy, `cluster list`, the ultra-strict policy
that no node meets (spawn and `explain --live`), and the Prometheus counter.
The per-policy landing table is made from the decisions of those very spawns
(GET /v1/decisions?cluster=true).

docs/guide.md marks each captured block with
    <!-- captured by scripts/capture_guide.py: NAME -->
    ...
    <!-- end captured -->
and --write replaces what is between the two lines; a block the guide marks
but this script does not make (or the reverse) is an error. Commands are shown
as the guide writes them (addresses and paths of the guide, not of the
loopback run); their output is the real output of this run, so ids, beacon ids
and latencies differ from run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hypercore import __version__
from hypercore.devcluster import Cluster, wait_for

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"
POLICIES = sorted((ROOT / "examples" / "policies").glob("*.json"))
SAMPLE = "examples/clusters/sample.json"
NODES = [("budget", "0.006", "0.70"), ("standard", "0.020", "0.93"), ("premium", "0.045", "0.99")]
ENTRY = "standard"  # the node the user talks to (HYPERCORE_ADDR)
GUIDE_ADDR = "https://10.0.0.1:8001"  # how the guide writes that node's address
SPAWN_COMMAND = "echo hello from $HYPERCORE_WORKLOAD_ID; sleep 60"
ULTRA_STRICT = {"name": "ultra-strict", "mode": "enforce",
                "rules": {"max_latency_ms": 1, "max_price_per_gb": 0.001, "min_reputation_score": 0.99}}
# Where the guide's prose says each policy lands (and why); a run that disagrees stops --write. balanced and
# permissive are left out: their prose explains the ranking rather than promising a node.
EXPECTED = {"cost-optimized": "budget", "high-trust": "premium", "low-latency": ENTRY}
START = "<!-- captured by scripts/capture_guide.py: "
MARKED = re.compile(r"(<!-- captured by scripts/capture_guide\.py: ([\w-]+) -->\n)(.*?)(<!-- end captured -->)", re.S)


class Capture:
    """Runs `hypercore …` commands as a user would and keeps each block of what they printed."""

    def __init__(self) -> None:
        self.blocks: dict[str, str] = {}
        self.env: dict[str, str] = {**os.environ}

    def run(self, args: list[str], cwd: Path = ROOT, shown: str | None = None) -> tuple[str, int]:
        """`hypercore ARGS` in `cwd`: a transcript (`$ command` and what it printed, stderr in place) and the exit code."""
        proc = subprocess.run([sys.executable, "-m", "hypercore.cli", *args], cwd=cwd, env=self.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        command = shown or shlex.join(["hypercore", *args])
        printed = "\n".join(line.rstrip() for line in proc.stdout.rstrip().splitlines())  # rich pads table lines
        return f"$ {command}\n{printed}", proc.returncode

    def keep(self, name: str, text: str) -> None:
        self.blocks[name] = text.rstrip("\n")
        print(f"\n--- {name} " + "-" * max(0, 66 - len(name)))
        print(self.blocks[name])


def fenced(text: str) -> str:
    return f"```\n{text}\n```\n"


def offline(cap: Capture) -> None:
    """Steps that need no cluster: validate and explain the example policies."""
    paths = [str(p.relative_to(ROOT)) for p in POLICIES]
    text, rc = cap.run(["policy", "validate", *paths], shown="hypercore policy validate examples/policies/*.json")
    assert rc == 0, text
    cap.keep("validate", fenced(text))
    with tempfile.TemporaryDirectory(prefix="hypercore-guide-") as tmp:
        (Path(tmp) / "typo.json").write_text('{\n  "name": "typo",\n  "scoring": {\n    "queue_depth_weight": 1\n  }\n}\n')
        (Path(tmp) / "commented.json").write_text('{\n  // the cheap nodes first\n  "name": "commented"\n}\n')
        typo, rc_typo = cap.run(["policy", "validate", "typo.json"], cwd=Path(tmp))
        commented, rc_commented = cap.run(["policy", "validate", "commented.json"], cwd=Path(tmp))
    assert rc_typo == rc_commented == 1, (typo, commented)
    cap.keep("validate-errors", fenced(f"{typo}\n{commented}"))
    text, rc = cap.run(["policy", "explain", "examples/policies/high-trust.json", "--nodes", SAMPLE, "--limit", "3"])
    assert rc == 0, text
    cap.keep("explain-sample", fenced(text))
    lines = []
    for path in paths:
        text, rc = cap.run(["policy", "explain", path, "--nodes", SAMPLE, "--limit", "3"])
        assert rc in (0, 3), text
        lines.append(text.splitlines()[-1])
    cap.keep("explain-sample-summaries", fenced(
        "$ for p in examples/policies/*.json; do hypercore policy explain \"$p\" --nodes "
        f"{SAMPLE} --limit 3 | tail -n 1; done\n" + "\n".join(lines)))


def decisions_by_id(cluster: Cluster) -> dict[str, dict]:
    answer = cluster[ENTRY].get("/v1/decisions", params={"cluster": "true"})
    answer.raise_for_status()
    return {d["id"]: d for d in answer.json()["decisions"] if d.get("id")}


def landing_table(spawned: list[tuple[str, str | None]], decisions: dict[str, dict]) -> str:
    rows = ["| policy | landed on | ranking (score) | the decision's summary |", "|---|---|---|---|"]
    for policy, workload_id in spawned:
        d = decisions.get(workload_id or "")
        if d is None:
            rows.append(f"| `{policy}` | not placed | | |")
            continue
        ranked = ", ".join(f"{r['node']} {r['score']:.3f}" for r in d["decision"]["ranked"])
        rows.append(f"| `{policy}` | **{d['node']}** | {ranked} | {d['decision']['summary']} |")
    return "\n".join(rows) + "\n"


def live(cap: Capture, tmp: Path) -> None:
    """The steps against a running cluster, as a user of node `standard`."""
    cluster = Cluster(tmp / "cluster")
    try:
        for name, price, reputation in NODES:
            cluster.add(name, "--enable-exec", "--beacon-price", price, "--beacon-reputation", reputation)
        cluster.wait_converged()
        entry = cluster[ENTRY]
        cap.env.update(cluster.client_env(entry))

        text, rc = cap.run(["cluster", "metrics"])
        assert rc == 0, text
        cap.keep("metrics", fenced(text))

        transcript = [f"$ for p in examples/policies/*.json; do\n>   hypercore cluster spawn --policy \"$p\" --cpu 0.25 "
                      f"--command '{SPAWN_COMMAND}'\n> done"]
        spawned: list[tuple[str, str | None]] = []
        for policy in POLICIES:
            text, rc = cap.run(["cluster", "spawn", "--policy", str(policy.relative_to(ROOT)), "--cpu", "0.25",
                                "--command", SPAWN_COMMAND])
            transcript.append(text.split("\n", 1)[1] if "\n" in text else "")
            found = re.search(r"^spawned (\S+) on (\S+) ", text, re.M)
            spawned.append((policy.stem, found.group(1) if rc == 0 and found else None))
        cap.keep("spawn-loop", fenced("\n".join(transcript)))
        cap.keep("landings", landing_table(spawned, decisions_by_id(cluster)))
        landed = {policy: decisions_by_id(cluster).get(wid or "", {}).get("node") for policy, wid in spawned}
        wrong = {p: (node, landed.get(p)) for p, node in EXPECTED.items() if landed.get(p) != node}
        if wrong:
            raise SystemExit(f"placements differ from what the guide explains (policy: (expected, landed)): {wrong}")

        time.sleep(0.5)  # the `echo` of each workload is in its log before `list` shows them running
        text, rc = cap.run(["cluster", "list"], shown="hypercore cluster list")
        assert rc == 0, text
        cap.keep("list", fenced(text))

        # logs and stop take a unique prefix of the id: the shortest one of at least 4 characters.
        ids = [wid for _, wid in spawned if wid]
        cheap_id = dict(spawned)["cost-optimized"] or ""
        prefix = next(cheap_id[:n] for n in range(4, len(cheap_id) + 1)
                      if sum(w.startswith(cheap_id[:n]) for w in ids) == 1)
        text, rc = cap.run(["cluster", "logs", "--id", cheap_id[:8]])
        assert rc == 0, text
        cap.keep("logs", fenced(text))
        text, rc = cap.run(["cluster", "stop", "--id", prefix])
        assert rc == 0, text
        cap.keep("stop", fenced(text))

        (tmp / "ultra-strict.json").write_text(json.dumps(ULTRA_STRICT, indent=1) + "\n")
        text, rc = cap.run(["cluster", "spawn", "--policy", "ultra-strict.json", "--command", "true"], cwd=tmp)
        cap.keep("ultra-strict", fenced(f"{text}\n$ echo $?\n{rc}"))
        text, rc = cap.run(["policy", "explain", "ultra-strict.json", "--live"], cwd=tmp)
        cap.keep("ultra-strict-explain", fenced(f"{text}\n$ echo $?\n{rc}"))

        # Every hypercore_ibrl_ series: the beacon gauges are on every node; the evaluation counters only on a
        # node that decided a spawn (its request id's owner), which the entry node may not be in a given run.
        pipeline = "curl -s --cacert {ca} {addr}/metrics | grep '^hypercore_ibrl_'"
        if shutil.which("curl") is None:
            raise SystemExit("curl is not installed (apt-get install curl): the guide shows a curl command")
        prom = subprocess.run(["bash", "-c", pipeline.format(ca=shlex.quote(str(cluster.ca_file)), addr=entry.url)],
                              capture_output=True, text=True, timeout=60)
        assert prom.returncode == 0, prom.stderr
        cap.keep("prometheus", fenced(f"$ {pipeline.format(ca='pki/ca.pem', addr=GUIDE_ADDR)}\n{prom.stdout.rstrip()}"))
        # Stop what the guide started, through the API, so that no supervisor still writes when the directory goes.
        for wid in ids:
            entry.delete(f"/v1/workloads/{wid}")
        wait_for(lambda: all(entry.get(f"/v1/workloads/{w}").json()["state"] not in ("pending", "running") for w in ids),
                 30, "the guide's workloads to stop")
    finally:
        cluster.close()


def remove_tree(path: Path) -> None:
    """Remove the run's directory; a workload's supervisor may still be writing its last state for a moment."""
    for _ in range(50):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.2)
    shutil.rmtree(path)  # still there after 10 s: say why


def write_guide(blocks: dict[str, str]) -> None:
    text = GUIDE.read_text()
    marked = [m.group(2) for m in MARKED.finditer(text)]
    if text.count(START) != len(marked):
        raise SystemExit(f"{GUIDE}: a `{START}NAME -->` line has no `<!-- end captured -->` after it")
    if unknown := sorted(set(marked) - set(blocks)):
        raise SystemExit(f"{GUIDE}: blocks {unknown} are marked but this script makes none of them")
    if unused := sorted(set(blocks) - set(marked)):
        raise SystemExit(f"{GUIDE}: blocks {unused} are made here but not marked in the guide")
    GUIDE.write_text(MARKED.sub(lambda m: m.group(1) + blocks[m.group(2)] + "\n" + m.group(4), text))
    print(f"\nwrote {len(marked)} blocks into {GUIDE.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--write", action="store_true", help="put the captured blocks into docs/guide.md")
    args = parser.parse_args()
    cap = Capture()
    offline(cap)
    tmp = Path(tempfile.mkdtemp(prefix="hypercore-guide-"))
    try:
        live(cap, tmp)
    finally:
        remove_tree(tmp)
    cap.keep("provenance", f"Captured by `python scripts/capture_guide.py --write` on "
                           f"{time.strftime('%Y-%m-%d')} with hypercore {__version__}.\n")
    if args.write:
        write_guide(cap.blocks)


if __name__ == "__main__":
    main()
