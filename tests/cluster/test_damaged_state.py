"""Issue 9 on real agents: a damaged registry stops the agent with a way out (`hypercore node recover`), and
a bad row in it is quarantined instead of failing listings or the start."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hypercore.devcluster import Cluster, free_port, wait_for
from tests.runtime.oci_image import ensure_test_image

ENGINE: str = shutil.which("podman") or "podman"
GARBAGE = b"this is not an SQLite file at all " * 200


def hypercore(*args: str, tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hypercore.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={"PATH": os.environ["PATH"], "HOME": str(tmp)})


def test_a_garbage_registry_stops_the_agent_with_the_file_and_the_way_out(tmp_path: Path) -> None:
    from hypercore.identity.pki import create_ca

    create_ca(tmp_path / "pki")
    data = tmp_path / "data"
    data.mkdir()
    (data / "registry.sqlite3").write_bytes(GARBAGE)
    r = hypercore("cluster", "--insecure", "--ca-file", str(tmp_path / "pki" / "ca.pem"), "--data-dir", str(data),
                  "--http-bind-addr", "127.0.0.1:0", "--cluster-bind-addr", f"127.0.0.1:{free_port()}",
                  "--serf-rpc-addr", f"127.0.0.1:{free_port()}", "--disable-containers", tmp=tmp_path)
    assert r.returncode == 1, r.stderr
    assert f"{data / 'registry.sqlite3'} is damaged" in r.stderr, r.stderr
    assert f"hypercore node recover --data-dir {data}" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.podman
def test_node_recover_brings_back_a_running_container_and_exec_workload(cluster: Cluster) -> None:
    image = ensure_test_image(ENGINE)
    node = cluster.add("n1", "--enable-exec")
    container = node.post("/v1/workloads", {"spec": {"image_ref": image, "args": ["sleep", "3600"], "cpu": 0.1,
                                                     "mem": 32, "env": {"KEPT": "yes"}}})
    assert container.status_code == 201, container.text
    process = node.post("/v1/workloads", {"spec": {"command": "sleep 3600", "cpu": 0.1, "mem": 32}})
    assert process.status_code == 201, process.text
    cid, pid = container.json()["id"], process.json()["id"]
    engine_id = json.loads(subprocess.run([ENGINE, "inspect", f"hc-{cid}"], capture_output=True, text=True,
                                          check=True).stdout)[0]["Id"]
    try:
        assert node.stop() == 0  # workloads outlive their agent
        registry = node.data_dir / "registry.sqlite3"
        registry.write_bytes(GARBAGE)
        for companion in ("registry.sqlite3-wal", "registry.sqlite3-shm"):  # a WAL would bring page 1 back
            (node.data_dir / companion).unlink(missing_ok=True)
        node.start([])
        assert node.proc is not None and node.proc.wait(60) == 1
        assert "hypercore node recover" in node.log() and "Traceback" not in node.log()

        r = hypercore("node", "recover", "--data-dir", str(node.data_dir), tmp=cluster.root)
        print(f"\n$ hypercore node recover --data-dir ...\n{r.stdout}")
        assert r.returncode == 0, r.stderr
        assert "moved registry.sqlite3 aside" in r.stdout and "1 running containers" in r.stdout, r.stdout
        assert "1 running exec" in r.stdout, r.stdout
        assert [p.read_bytes() for p in node.data_dir.glob("registry.sqlite3.damaged-*")] == [GARBAGE]

        node.restart()
        admin = cluster.admin_token  # a recovered workload has no owner: management tokens see it
        listed = {w["id"]: w for w in node.get("/v1/workloads", token=admin).json()["workloads"]}
        assert listed[cid]["state"] == "running" and listed[cid]["spec"]["image_ref"] == image
        assert listed[cid]["spec"]["args"] == ["sleep", "3600"] and listed[cid]["spec"]["env"] == {"KEPT": "yes"}
        assert listed[pid]["state"] == "running" and listed[pid]["spec"]["command"] == "sleep 3600"
        # The very same container runs on (adopted, not restarted), and the agent controls both again.
        state = json.loads(subprocess.run([ENGINE, "inspect", engine_id], capture_output=True, text=True,
                                          check=True).stdout)[0]["State"]
        assert state["Running"]
        for wid in (cid, pid):
            stopped = node.delete(f"/v1/workloads/{wid}", token=admin)
            assert stopped.status_code == 200 and stopped.json()["state"] == "stopped", stopped.text
    finally:
        subprocess.run([ENGINE, "rm", "-f", "--time", "0", engine_id], capture_output=True, timeout=60)


def test_a_bad_row_is_listed_quarantined_and_the_agent_still_starts(cluster: Cluster) -> None:
    node = cluster.add("n1", "--enable-exec", "--disable-containers")
    good = node.post("/v1/workloads", {"spec": {"command": "sleep 3600", "cpu": 0.1}}).json()["id"]
    assert node.stop() == 0
    bad_spec, bad_state = "0b0b0b0b-0000-4000-8000-000000000001", "0b0b0b0b-0000-4000-8000-000000000002"
    with sqlite3.connect(node.data_dir / "registry.sqlite3") as db:
        db.execute("INSERT INTO workloads (id, spec, state, driver, node, created_at, owner) VALUES "
                   "(?, '{\"command\": 5}', 'running', 'exec', 'n1', 1.0, ?)", (bad_spec, cluster.token_user))
        db.execute("INSERT INTO workloads (id, spec, state, driver, node, created_at, owner) VALUES "
                   "(?, '{\"command\": \"true\"}', 'hibernating', 'exec', 'n1', 2.0, ?)",
                   (bad_state, cluster.token_user))
    node.restart()  # an unfinished bad row used to stop the start
    r = node.get("/v1/workloads")
    assert r.status_code == 200, r.text
    listed = {w["id"]: w for w in r.json()["workloads"]}
    assert listed[good]["state"] == "running"
    assert listed[bad_spec]["state"] == "unknown" and "spec does not validate" in listed[bad_spec]["reason"]
    assert listed[bad_state]["state"] == "unknown" and "'hibernating'" in listed[bad_state]["reason"]
    assert "quarantined a registry row" in node.log()
    wait_for(lambda: node.delete(f"/v1/workloads/{good}").status_code == 200, 30, "the good workload to stop")
