"""Issue 14's "must show", on a real agent with real QEMU: an image served over a published port
from inside its own VM, `--mem` seen by the guest, `cluster logs`, `cluster stop`, and an agent
SIGKILLed and restarted that finds its VMs again (one still running, listed once; one that ended
while it was down, with its exit code). One booted VM serves most assertions: a boot under TCG
costs seconds."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request

import pytest

from hypercore.devcluster import Cluster, Node, free_port, wait_for
from hypercore.runtime.isolation import same_process
from tests.runtime.oci_image import INDEX_HTML, ensure_test_image

pytestmark = pytest.mark.qemu
ENGINE = shutil.which("podman") or "podman"


def cli(cluster: Cluster, node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hypercore.cli", "cluster", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **cluster.client_env(node)})


def workload(node: Node, wid: str) -> dict:
    matches = [w for w in node.get("/v1/workloads").json()["workloads"] if w["id"] == wid]
    assert len(matches) == 1, matches  # listed once
    return matches[0]


def vm_state(node: Node, wid: str) -> dict:
    return json.loads((node.data_dir / "workloads" / wid / "vm.json").read_text())


def serves(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read() == INDEX_HTML
    except OSError:
        return False


def test_a_vm_serves_a_port_shows_its_memory_logs_survives_the_agent_and_stops(
        cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    image = ensure_test_image(ENGINE)
    cache = tmp_path_factory.mktemp("vm-cache")
    node = cluster.add("vm-node", "--enable-vm", "--vm-cache-dir", str(cache), "--disable-containers")
    caps = wait_for(lambda: (node.nodes().get("vm-node") or {}).get("capabilities"), 30, "the node's beacon")
    assert "vm" in caps and "container" not in caps, caps

    port = free_port()
    r = node.post("/v1/workloads", {"spec": {
        "image_ref": image, "runtime": "vm", "mem": 128, "cpu": 1, "ports": [f"{port}:80"],
        "env": {"GREETING": "hello from inside the VM"},
        "args": ["sh", "-c", 'echo "$GREETING"; head -1 /proc/meminfo; exec httpd -f -p 80 -h /www']}})
    assert r.status_code == 201, r.text
    served = r.json()["id"]
    wait_for(lambda: serves(port), 60, "the page from inside the VM")

    logs = cli(cluster, node, "logs", "--id", served)
    assert logs.returncode == 0 and "hello from inside the VM" in logs.stdout, logs
    mem_kb = int(re.search(r"MemTotal:\s+(\d+) kB", logs.stdout).group(1))  # type: ignore[union-attr]
    assert 64 * 1024 < mem_kb <= 128 * 1024, mem_kb  # --mem 128, less what the guest kernel keeps for itself

    # The default command of the image (sh, no input) ends at once with 0; this one will end with 5
    # while the agent is down.
    spawned = cli(cluster, node, "spawn", "--image-ref", image, "--runtime", "vm", "--mem", "96", "--cpu", "0.5",
                  "--json")
    assert spawned.returncode == 0, spawned
    quick = json.loads(spawned.stdout)["id"]
    r = node.post("/v1/workloads", {"spec": {"image_ref": image, "runtime": "vm", "mem": 96, "cpu": 0.5,
                                             "args": ["sh", "-c", "sleep 3; exit 5"]}})
    assert r.status_code == 201, r.text
    ending = r.json()["id"]
    wait_for(lambda: workload(node, quick)["state"] == "exited", 60, "the image's own command to end")
    assert workload(node, quick)["exit_code"] == 0

    qemu = vm_state(node, served)
    node.kill()  # SIGKILL: nothing of the agent's shutdown runs
    assert same_process(qemu["qemu_pid"], qemu["qemu_start_time"]) and serves(port)
    wait_for(lambda: vm_state(node, ending).get("status") == "exited", 60, "a VM to end while the agent is down")
    node.restart()

    assert workload(node, served)["state"] == "running" and serves(port)
    ended = workload(node, ending)
    assert (ended["state"], ended["exit_code"]) == ("exited", 5), ended

    stop = cli(cluster, node, "stop", "--id", served)
    assert stop.returncode == 0, stop
    assert workload(node, served)["state"] == "stopped"
    assert not same_process(qemu["qemu_pid"], qemu["qemu_start_time"]) and not serves(port)
    left = subprocess.run(["pgrep", "-f", str(node.data_dir / "workloads")], capture_output=True, text=True).stdout
    assert left == "", left  # no QEMU (and no monitor) of this node's VMs is left


def test_a_node_without_enable_vm_is_not_chosen_for_a_vm(cluster: Cluster) -> None:
    node = cluster.add("plain", "--enable-exec", "--disable-containers")
    r = node.post("/v1/workloads", {"spec": {"image_ref": "localhost/x:1", "runtime": "vm"}})
    assert r.status_code == 409 and "vm" in r.text, r.text
