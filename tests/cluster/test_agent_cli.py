"""The agent's refusals at start-up, through the real `hypercore cluster` entry point."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hypercore.devcluster import Cluster, free_port

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None, tmp: Path) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp)}
    return subprocess.run([sys.executable, "-m", "hypercore.cli", "cluster", *args], capture_output=True, text=True,
                          timeout=60, env={**base, **(env or {})})


def test_missing_serf_binary_names_the_package(tmp_path: Path) -> None:
    r = run("--data-dir", str(tmp_path / "d"), "--http-bind-addr", "127.0.0.1:0", env={"PATH": "/nonexistent"}, tmp=tmp_path)
    assert r.returncode == 2
    assert "install the Debian package 'serf'" in r.stderr and "Traceback" not in r.stderr


def test_a_node_without_its_credentials_is_refused_and_told_how_to_make_them(tmp_path: Path) -> None:
    r = run("--data-dir", str(tmp_path / "d"), "--http-bind-addr", f"127.0.0.1:{free_port()}", tmp=tmp_path)
    assert r.returncode == 2, r.stderr
    for needle in ("--ca-file", "--cert-file", "--key-file", "--encrypt", "hypercore tls ca create",
                   "hypercore tls cert create", "hypercore keygen", "--insecure"):
        assert needle in r.stderr, (needle, r.stderr)
    assert "Traceback" not in r.stderr


def test_insecure_mode_is_refused_off_loopback(tmp_path: Path) -> None:
    r = run("--data-dir", str(tmp_path / "d"), "--insecure", "--http-bind-addr", f"0.0.0.0:{free_port()}",
            "--cluster-bind-addr", f"127.0.0.1:{free_port()}", tmp=tmp_path)
    assert r.returncode == 2 and "--insecure is allowed only on loopback addresses" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_secrets_on_the_agent_command_line_are_refused(tmp_path: Path) -> None:
    token = run("--data-dir", str(tmp_path / "d"), "--cluster-token", "s3cret", tmp=tmp_path)
    assert token.returncode == 2 and "takes no token" in token.stderr and "HYPERCORE_TOKEN" in token.stderr
    assert "--token-file" in token.stderr
    key = run("--data-dir", str(tmp_path / "d"), "--encrypt", "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U=",
              tmp=tmp_path)
    assert key.returncode == 2 and "HYPERCORE_ENCRYPT" in key.stderr and "--encrypt-file" in key.stderr
    for r in (token, key):
        assert "Traceback" not in r.stderr


def test_a_certificate_for_another_node_name_is_refused(tmp_path: Path) -> None:
    from hypercore.identity.pki import create_ca, create_node_cert

    create_ca(tmp_path / "pki")
    cert, key = create_node_cert(tmp_path / "pki", "alpha", tmp_path / "pki")
    r = run("--data-dir", str(tmp_path / "d"), "--node-name", "beta", "--ca-file", str(tmp_path / "pki" / "ca.pem"),
            "--cert-file", str(cert), "--key-file", str(key), "--http-bind-addr", f"127.0.0.1:{free_port()}",
            env={"HYPERCORE_ENCRYPT": "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="}, tmp=tmp_path)
    assert r.returncode == 2 and "beta" in r.stderr and "alpha" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_a_bad_cluster_policy_file_is_refused_with_its_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": {"max_latncy_ms": 5}}')
    r = run("--data-dir", str(tmp_path / "d"), "--insecure", "--http-bind-addr", "127.0.0.1:0",
            "--cluster-bind-addr", f"127.0.0.1:{free_port()}", "--cluster-policy", str(bad), tmp=tmp_path)
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
                       env={"PATH": os.environ["PATH"], **cluster.client_env(node)})
    assert r.returncode == 0, r.stderr
    assert [x["node"] for x in json.loads(r.stdout)["ranked"]] == ["cheap", "dear"]


def test_a_udp_port_in_use_for_probes_is_named(tmp_path: Path) -> None:
    """Probes are answered on UDP at the API's port number (hypercore.beacon.echo): if another program holds
    it, the agent says so and stops, before it joins anything."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        r = run("--data-dir", str(tmp_path / "d"), "--insecure", "--http-bind-addr", f"127.0.0.1:{port}",
                "--cluster-bind-addr", f"127.0.0.1:{free_port()}", "--serf-rpc-addr", f"127.0.0.1:{free_port()}",
                tmp=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f"cannot answer probes on UDP 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr, r.stderr
