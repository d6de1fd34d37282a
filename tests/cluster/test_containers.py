"""Container workloads, capacity and restart-without-loss on real clusters (real Podman, real serf)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from hypercore.devcluster import Cluster, free_port, live_workload_processes, wait_for
from tests.runtime.oci_image import ensure_test_image

ROOT = Path(__file__).resolve().parents[2]
# conftest.py marks every test here `cluster` and `serf`; these also need Podman
# and the busybox image, which tests/conftest.py checks once per session.
pytestmark = pytest.mark.podman
# "podman" when it is not on PATH: then no test here gets past that check.
ENGINE: str = shutil.which("podman") or "podman"
COST = json.loads((ROOT / "examples" / "policies" / "cost-optimized.json").read_text())


@pytest.fixture(scope="module")
def image() -> str:
    return ensure_test_image(ENGINE)


def containers_for(workload_id: str) -> list[dict]:
    """Containers of a workload as the engine itself reports them (running or not)."""
    out = subprocess.run([ENGINE, "ps", "-a", "--filter", f"label=hypercore.workload={workload_id}", "--format", "json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out or "[]")


def running_containers(workload_id: str) -> int:
    return sum(1 for c in containers_for(workload_id) if c.get("State") == "running")


def test_container_with_port_env_and_limits_through_the_cluster(cluster: Cluster, image: str) -> None:
    a = cluster.add("a", "--beacon-price", "0.01")
    cluster.add("b", "--beacon-price", "0.03")
    cluster.wait_converged()
    assert "container" in a.nodes()["a"]["capabilities"]
    port = free_port()
    spec = {"image_ref": image, "args": ["sh", "-c", "echo greeting=$GREETING; exec httpd -f -p 8080 -h /www"],
            "ports": [f"{port}:8080"], "env": {"GREETING": "hello container"}, "cpu": 0.5, "mem": 64}
    r = cluster["b"].post("/v1/workloads", {"spec": spec, "policy": COST})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["node"] == "a"
    def page() -> str | None:
        resp = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
        return resp.text if resp.status_code == 200 else None

    assert "hypercore" in wait_for(page, 20, "the page through the published port")

    def logs_with_greeting() -> str | None:
        text = cluster["b"].get(f"/v1/workloads/{body['id']}/logs").text
        return text if "greeting=hello container" in text else None

    logs = wait_for(logs_with_greeting, 10, "the env var in the logs")
    assert "greeting=hello container" in logs
    [container] = containers_for(body["id"])
    inspect = json.loads(subprocess.run([ENGINE, "inspect", container["Id"]], capture_output=True, text=True, check=True).stdout)[0]
    assert inspect["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert inspect["HostConfig"]["NanoCpus"] == 500_000_000
    stopped = cluster["b"].delete(f"/v1/workloads/{body['id']}")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    assert running_containers(body["id"]) == 0
    assert len(containers_for(body["id"])) == 1  # kept after it ended, with its exit code
    assert cluster["b"].post(f"/v1/workloads/{body['id']}/remove", {}).status_code == 200
    assert containers_for(body["id"]) == []


def test_unknown_image_is_refused_and_the_next_node_takes_it(
    cluster: Cluster, image: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Node "empty" has a Podman storage of its own without the image (a real
    # engine, another root); it is the cheapest, so it is tried first.
    wrapper = tmp_path / "podman-empty"
    storage = Path(tempfile.mkdtemp(prefix="hc-", dir="/tmp"))  # podman wants a runroot under 50 characters
    request.addfinalizer(lambda: shutil.rmtree(storage, ignore_errors=True))
    wrapper.write_text(f'#!/bin/sh\nexec {ENGINE} --root {storage}/root --runroot {storage}/run "$@"\n')
    wrapper.chmod(0o755)
    cluster.add("empty", "--container-engine", str(wrapper), "--beacon-price", "0.005")
    cluster.add("stocked", "--beacon-price", "0.02")
    cluster.wait_converged()
    r = cluster["stocked"].post("/v1/workloads", {"spec": {"image_ref": image, "args": ["sleep", "30"], "cpu": 0.1},
                                                  "policy": COST})
    assert r.status_code == 201, r.text
    body = r.json()
    assert [(a["node"], a["outcome"]) for a in body["attempts"]] == [("empty", "refused"), ("stocked", "ok")]
    assert "image" in body["attempts"][0]["detail"].lower()
    assert running_containers(body["id"]) == 1


def test_a_spawn_that_does_not_fit_the_cheapest_node_goes_to_one_that_fits(cluster: Cluster) -> None:
    cluster.add("small", "--enable-exec", "--disable-containers", "--capacity-cpu", "1", "--beacon-price", "0.005")
    big = cluster.add("big", "--enable-exec", "--disable-containers", "--capacity-cpu", "8", "--beacon-price", "0.02")
    cluster.wait_converged()
    r = big.post("/v1/workloads", {"spec": {"command": "sleep 30", "cpu": 5}, "policy": COST})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["node"] == "big"
    # The beacon says what is free, so the decision filters: no attempt is wasted on "small".
    assert [a["node"] for a in body["attempts"]] == ["big"]
    assert {x["node"]: x["reasons"] for x in body["decision"]["rejected"]}["small"] == [
        "insufficient cpu (free 1 of 1, asks 5)"]
    # Capacity in use is published in the beacon: at once when less than half is free (a free-capacity
    # level is news; a spawn alone is not: it goes out with the next refresh).
    wait_for(lambda: big.nodes()["big"]["cpu_free"] == 3, 15, "big's beacon to show 3 free CPUs")
    assert big.nodes()["small"]["cpu_total"] == 1


def test_sigkill_and_restart_readopts_without_loss_or_duplicates(cluster: Cluster, image: str) -> None:
    node = cluster.add("n1", "--enable-exec")
    other = cluster.add("n2", "--enable-exec", "--disable-containers", "--beacon-price", "0.9")
    cluster.wait_converged()
    spawned = {}
    for spec in ({"command": "echo exec-before; sleep 300", "cpu": 0.1},
                 {"image_ref": image, "args": ["sh", "-c", "echo container-before; exec sleep 300"], "cpu": 0.1},
                 {"command": "echo short-lived; sleep 1", "cpu": 0.1},
                 {"image_ref": image, "args": ["sh", "-c", "sleep 1; exit 3"], "cpu": 0.1}):
        r = other.post("/v1/workloads", {"spec": spec, "policy": COST})
        assert r.status_code == 201 and r.json()["node"] == "n1", r.text
        spawned[spec.get("command") or " ".join(spec["args"])] = r.json()["id"]
    exec_id, short_id = spawned["echo exec-before; sleep 300"], spawned["echo short-lived; sleep 1"]
    container_id = spawned["sh -c echo container-before; exec sleep 300"]
    short_container_id = spawned["sh -c sleep 1; exit 3"]
    wait_for(lambda: live_workload_processes()[exec_id] == 1 and running_containers(container_id) == 1, 10,
             "the workloads to run")

    node.kill()  # SIGKILL: no graceful anything

    def short_lived_ones_ended() -> bool:
        states = [c.get("State") for c in containers_for(short_container_id)]
        return live_workload_processes()[short_id] == 0 and states == ["exited"]

    wait_for(short_lived_ones_ended, 15, "the short-lived workloads to end while the agent is down")
    assert live_workload_processes()[exec_id] == 1 and running_containers(container_id) == 1
    node.restart()
    assert "re-adopted workloads after restart" in node.log()

    def n1_workloads() -> list[dict] | None:
        workloads = [w for w in other.get("/v1/workloads").json()["workloads"] if w["node"] == "n1"]
        return workloads if len(workloads) == 4 else None

    listed = {w["id"]: w for w in wait_for(n1_workloads, 30, "the restarted node's workloads in the cluster list")}
    assert listed[exec_id]["state"] == "running" and listed[container_id]["state"] == "running"
    assert listed[short_id]["state"] == "exited"  # a process that was not our child: exit code unknowable
    # A container that ended while the agent was down keeps its exit code in the engine.
    assert (listed[short_container_id]["state"], listed[short_container_id]["exit_code"]) == ("exited", 3)
    # Nothing was started twice: counted from the runtimes themselves.
    assert live_workload_processes()[exec_id] == 1
    assert running_containers(container_id) == 1 and len(containers_for(container_id)) == 1
    assert "exec-before" in other.get(f"/v1/workloads/{exec_id}/logs").text
    assert "container-before" in other.get(f"/v1/workloads/{container_id}/logs").text
    for wid in (exec_id, container_id):
        r = other.delete(f"/v1/workloads/{wid}")
        assert r.status_code == 200 and r.json()["state"] == "stopped", r.text
        assert other.delete(f"/v1/workloads/{wid}").json()["state"] == "stopped"  # idempotent
    wait_for(lambda: live_workload_processes()[exec_id] == 0, 10, "the exec workload to end")
    assert running_containers(container_id) == 0
    assert other.delete("/v1/workloads/22222222-2222-4222-8222-222222222222").status_code == 404
