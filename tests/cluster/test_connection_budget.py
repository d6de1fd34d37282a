"""A flood of connections cannot take an agent's descriptors and memory (found attacking the API: 3,000 TLS
connections that never sent a request held a real agent at 919 MiB, and nothing bounded them but the
descriptor limit, which the agent's own files and calls need too). Real agent, real TLS over loopback; the
attacker and the bystanders are other loopback addresses (127.0.0.2, …), strangers to the cluster, whose
members all advertise 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hypercore.api.connections import STRANGER_CONNECTIONS, STRANGER_PER_ADDRESS
from hypercore.devcluster import Cluster, Node, wait_for

EXEC = ("--enable-exec", "--disable-containers")
pytestmark = pytest.mark.cluster


def _connect(node: Node, source: str, tls: ssl.SSLContext | None) -> socket.socket | None:
    """A connection from `source` (a TLS one when `tls`, made complete), or None when the agent closed it."""
    sock = socket.create_connection(("127.0.0.1", node.http_port), timeout=10, source_address=(source, 0))
    if tls is None:
        return sock
    try:
        return tls.wrap_socket(sock, server_hostname=node.name)
    except (ssl.SSLError, OSError):
        sock.close()
        return None


def _closed_at_once(node: Node, source: str, tls: ssl.SSLContext) -> bool:
    sock = _connect(node, source, tls)
    if sock is not None:
        sock.close()
    return sock is None


def _refused(node: Node) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(node.get("/metrics").text):
        if family.name == "hypercore_refused_connections":
            out.update({s.labels["budget"]: s.value for s in family.samples if s.name.endswith("_total")})
    return out


@contextlib.contextmanager
def _held(socks: list[socket.socket | None]) -> Iterator[list[socket.socket]]:
    kept = [s for s in socks if s is not None]
    try:
        yield kept
    finally:
        for s in kept:
            s.close()


def _user_request(node: Node, source: str) -> httpx.Response:
    transport = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(node.pki.ca_file)), local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(f"{node.url}/v1/nodes", headers=node.headers())


def test_one_stranger_address_gets_its_share_and_the_others_are_still_served(cluster: Cluster) -> None:
    node = cluster.add("a", *EXEC)
    tls = ssl.create_default_context(cafile=str(cluster.ca_file))
    fds_before = len(os.listdir(f"/proc/{node.proc.pid}/fd"))  # type: ignore[union-attr]
    # Half the share as bare TCP connections that never start a handshake, the rest as idle TLS ones.
    half = STRANGER_PER_ADDRESS // 2
    with _held([_connect(node, "127.0.0.2", None) for _ in range(half)]) as bare, \
            _held([_connect(node, "127.0.0.2", tls) for _ in range(STRANGER_PER_ADDRESS - half + 10)]) as done:
        assert len(bare) == half and len(done) == STRANGER_PER_ADDRESS - half, (len(bare), len(done))
        assert _refused(node) == {"address": 10.0}
        # Everyone else is served: another stranger address, and the members' address.
        assert _user_request(node, "127.0.0.3").status_code == 200
        assert node.get("/v1/nodes").status_code == 200
        fds = len(os.listdir(f"/proc/{node.proc.pid}/fd"))  # type: ignore[union-attr]
        assert fds <= fds_before + STRANGER_PER_ADDRESS + 8, (fds_before, fds)
    # Closed, their places are free again.
    wait_for(lambda: _user_request(node, "127.0.0.2").status_code == 200, 10, "127.0.0.2 served again")


def test_strangers_together_get_their_total_and_members_are_still_served(cluster: Cluster) -> None:
    node = cluster.add("a", *EXEC)
    addresses = [f"127.0.1.{i}" for i in range(1, STRANGER_CONNECTIONS // STRANGER_PER_ADDRESS + 1)]
    # Bare TCP connections: counted from accept, before any TLS work, like the handshakes they could start.
    with _held([_connect(node, a, None) for a in addresses for _ in range(STRANGER_PER_ADDRESS)]) as flood:
        assert len(flood) == STRANGER_CONNECTIONS
        # The agent accepts connections as its loop gets to them: wait until it holds them all.
        tls = ssl.create_default_context(cafile=str(cluster.ca_file))
        wait_for(lambda: _closed_at_once(node, "127.0.2.1", tls), 10, "the strangers' total to be reached")
        assert _refused(node).get("strangers", 0) >= 1
        with pytest.raises(httpx.ConnectError):
            _user_request(node, "127.0.2.2")
        assert node.get("/v1/nodes").status_code == 200  # the members' budget is their own
        assert "address" not in _refused(node)
