"""The agent's refusals at start-up, through the real `hypercore cluster` entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hypercore.devcluster import TOKEN, Cluster, free_port

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None, tmp: Path) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp)}
    return subprocess.run([sys.executable, "-m", "hypercore.cli", "cluster", *args], capture_output=True, text=True,
                          timeout=60, env={**base, **(env or {})})


def test_missing_serf_binary_names_the_package(tmp_path: Path) -> None:
    r = run("--data-dir", str(tmp_path / "d"), "--http-bind-addr", "127.0.0.1:0", env={"PATH": "/nonexistent"}, tmp=tmp_path)
    assert r.returncode == 2
    assert "install the Debian package 'serf'" in r.stderr and "Traceback" not in r.stderr


def test_non_loopback_api_without_token_is_refused(tmp_path: Path) -> None:
    r = run("--data-dir", str(tmp_path / "d"), "--http-bind-addr", f"0.0.0.0:{free_port()}", tmp=tmp_path)
    assert r.returncode == 2
    assert "without a cluster token" in r.stderr and "--insecure" in r.stderr and "Traceback" not in r.stderr


def test_a_bad_cluster_policy_file_is_refused_with_its_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": {"max_latncy_ms": 5}}')
    r = run("--data-dir", str(tmp_path / "d"), "--http-bind-addr", "127.0.0.1:0", "--cluster-policy", str(bad), tmp=tmp_path)
    assert r.returncode == 2
    assert "max_latncy_ms: unknown key" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.cluster
def test_policy_explain_live_reads_the_running_cluster(cluster: Cluster) -> None:
    cluster.add("cheap", "--enable-exec", "--disable-containers", "--beacon-price", "0.005")
    node = cluster.add("dear", "--enable-exec", "--disable-containers", "--beacon-price", "0.04")
    cluster.wait_converged()
    r = subprocess.run([sys.executable, "-m", "hypercore.cli", "policy", "explain",
                        str(ROOT / "examples" / "policies" / "cost-optimized.json"), "--live", "--json"],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": os.environ["PATH"], "HYPERCORE_ADDR": node.url, "HYPERCORE_TOKEN": TOKEN})
    assert r.returncode == 0, r.stderr
    assert [x["node"] for x in json.loads(r.stdout)["ranked"]] == ["cheap", "dear"]
