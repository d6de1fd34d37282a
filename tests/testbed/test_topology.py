"""Topology files: the shipped example loads; each mistake is named with its field and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypercore.testbed.topology import TopologyError, load_topology

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "topologies" / "three-regions.json"


def test_the_three_regions_example_is_what_the_issue_asks_for() -> None:
    topology = load_topology(EXAMPLE)
    assert {r: len(spec.nodes) for r, spec in topology.regions.items()} == {"eu": 3, "us": 2, "ap": 2}
    assert (topology.link("eu", "us").rtt_ms, topology.link("ap", "eu").rtt_ms, topology.link("us", "ap").rtt_ms) \
        == (80, 160, 120)
    assert all(topology.link(r, r).rtt_ms == 2 for r in topology.regions)
    assert [l.loss_percent for l in topology.links if "ap" in l.between] == [1, 1, 1]  # every link of ap
    assert [l.loss_percent for l in topology.links if "ap" not in l.between] == [0, 0, 0]
    prices = {n.name: n.price_per_gb for _, n in topology.nodes()}
    assert min(prices, key=prices.__getitem__) == "ap-2"  # cost-optimized goes to ap, low-latency stays near


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


BASE = {"regions": {"eu": {"nodes": [{"name": "eu-1"}]}, "us": {"nodes": [{"name": "us-1"}]}},
        "links": [{"between": ["eu", "eu"], "rtt_ms": 2}, {"between": ["us", "us"], "rtt_ms": 2},
                  {"between": ["eu", "us"], "rtt_ms": 80}]}


@pytest.mark.parametrize("change, needle", [
    (lambda t: t["links"].pop(), "no link for eu - us"),
    (lambda t: t["links"].append({"between": ["us", "eu"], "rtt_ms": 9}), "links[3]: us - eu is already set by links[2]"),
    (lambda t: t["links"].append({"between": ["eu", "mars"], "rtt_ms": 9}), "'mars' is not a region"),
    (lambda t: t["links"][2].update(rtt_ms=-1), "links[2].rtt_ms: -1 is not allowed"),
    (lambda t: t["links"][2].update(loss_percent=101), "links[2].loss_percent: 101"),
    (lambda t: t["regions"]["us"]["nodes"].append({"name": "eu-1"}), "eu-1 appear more than once"),
    (lambda t: t["regions"]["eu"]["nodes"][0].update(name="EU_1"), "regions.eu.nodes[0].name: \"EU_1\" is not allowed"),
    (lambda t: t["regions"]["eu"]["nodes"][0].update(price="cheap"), "regions.eu.nodes[0].price: "),
    (lambda t: t["regions"].update({"bad region": {"nodes": [{"name": "x"}]}}), "'bad region' is not a region name"),
])
def test_mistakes_are_named(tmp_path: Path, change, needle: str) -> None:
    data = json.loads(json.dumps(BASE))
    change(data)
    with pytest.raises(TopologyError) as err:
        load_topology(write(tmp_path, data))
    assert needle in str(err.value) and str(tmp_path / "t.json") in str(err.value), str(err.value)


def test_not_json_and_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="not valid JSON"):
        load_topology(write(tmp_path, "{"))
    with pytest.raises(TopologyError, match="No such file"):
        load_topology(tmp_path / "nope.json")


def test_dev_up_refuses_a_bad_topology_before_making_anything(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    data = json.loads(json.dumps(BASE))
    data["links"].pop()
    proc = subprocess.run([sys.executable, "-m", "hypercore.cli", "dev", "up", "--topology", str(write(tmp_path, data)),
                           "--state-file", str(tmp_path / "s.json")], capture_output=True, text=True, timeout=60,
                          env=os.environ.copy())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: --topology ") and "no link for eu - us" in proc.stderr, proc.stderr
    assert not (tmp_path / "s.json").exists()
