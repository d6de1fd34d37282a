"""Real TLS 1.3 handshakes over loopback TCP with the contexts of hypercore.identity.tls."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypercore.identity import (
    IdentityError,
    NodeIdentity,
    client_context,
    peer_node_name,
    server_context,
)

TIMEOUT = 10.0


@contextlib.contextmanager
def tls_server(ctx: ssl.SSLContext) -> Iterator[tuple[tuple[str, int], dict]]:
    """Accept one connection in a thread; result gets "peer" (peer_node_name) or "error"."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    addr = listener.getsockname()
    result: dict = {}

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError as exc:
            result["error"] = exc
            return
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    result["peer"] = peer_node_name(tls)
                    tls.sendall(b"hello")
            except (ssl.SSLError, OSError) as exc:
                result["error"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield addr, result
    finally:
        if thread.is_alive() and "peer" not in result and "error" not in result:
            with contextlib.suppress(OSError):  # wake accept() if the client never connected
                socket.create_connection(addr, timeout=1).close()
        thread.join(TIMEOUT)
        listener.close()
        assert not thread.is_alive()


def connect(addr: tuple[str, int], ctx: ssl.SSLContext, server_hostname: str) -> bytes:
    """Handshake, then read the server's greeting (in TLS 1.3 a refused client certificate shows up here)."""
    with socket.create_connection(addr, timeout=TIMEOUT) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
        assert tls.version() == "TLSv1.3"
        data = b""
        while len(data) < 5:
            chunk = tls.recv(5 - len(data))
            if not chunk:
                break
            data += chunk
        return data


@pytest.fixture
def nodes(load_node) -> dict[str, NodeIdentity]:
    return {name: load_node(name) for name in ("node-a", "node-b")}


def test_mutual_tls_names_both_sides(nodes):
    with tls_server(server_context(nodes["node-a"])) as (addr, result):
        assert connect(addr, client_context(nodes["node-b"], None), "node-a") == b"hello"
    assert result == {"peer": "node-b"}


def test_the_server_issues_no_session_tickets(nodes):
    # No client of ours resumes a session, and two tickets after every handshake were a fifth of the
    # server's CPU for a new connection (bench/tls_connect.py). Tickets arrive before the first data.
    with tls_server(server_context(nodes["node-a"])) as (addr, result):
        with socket.create_connection(addr, timeout=TIMEOUT) as raw, \
                client_context(nodes["node-b"], None).wrap_socket(raw, server_hostname="node-a") as tls:
            assert tls.recv(5) == b"hello"
            assert tls.session is not None and not tls.session.has_ticket
    assert result == {"peer": "node-b"}


def test_explicit_ca_file(nodes, ca_dir: Path):
    with tls_server(server_context(nodes["node-a"])) as (addr, result):
        assert connect(addr, client_context(nodes["node-b"], ca_dir / "ca.pem"), "node-a") == b"hello"
    assert result == {"peer": "node-b"}


def test_wrong_server_name_fails(nodes):
    with tls_server(server_context(nodes["node-a"])) as (addr, result):
        with pytest.raises(ssl.SSLCertVerificationError, match="node-b"):
            connect(addr, client_context(nodes["node-b"], None), "node-b")
    assert isinstance(result.get("error"), ssl.SSLError)


def test_user_without_certificate(nodes, ca_dir: Path):
    with tls_server(server_context(nodes["node-a"])) as (addr, result):
        assert connect(addr, client_context(None, ca_dir / "ca.pem"), "node-a") == b"hello"
    assert result == {"peer": None}


def test_client_certificate_of_another_ca_fails(nodes, ca_dir: Path, other_ca_dir: Path, make_node):
    cert, key = make_node("intruder", ca=other_ca_dir)
    intruder = NodeIdentity.load(other_ca_dir / "ca.pem", cert, key, "intruder")
    ctx = client_context(intruder, ca_dir / "ca.pem")  # trusts our CA, presents a certificate of another
    with tls_server(server_context(nodes["node-a"])) as (addr, result):
        try:
            data: bytes | None = connect(addr, ctx, "node-a")
        except (ssl.SSLError, ConnectionError):
            data = None
    assert data in (None, b""), data  # no greeting: the server refused the handshake
    assert isinstance(result.get("error"), ssl.SSLError)
    assert "peer" not in result


def test_server_of_another_ca_fails(nodes, other_ca_dir: Path, make_node):
    cert, key = make_node("node-a", ca=other_ca_dir)
    impostor = NodeIdentity.load(other_ca_dir / "ca.pem", cert, key, "node-a")
    with tls_server(server_context(impostor)) as (addr, result):
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(addr, client_context(nodes["node-b"], None), "node-a")
    assert "peer" not in result


def test_tls_1_2_is_refused(nodes, ca_dir: Path):
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cafile=str(ca_dir / "ca.pem"))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls_server(server_context(nodes["node-a"])) as (addr, result):
        with pytest.raises(ssl.SSLError):
            connect(addr, old, "node-a")
    assert isinstance(result.get("error"), ssl.SSLError)


def test_context_settings(nodes):
    server = server_context(nodes["node-a"])
    assert server.minimum_version == ssl.TLSVersion.TLSv1_3 and server.verify_mode == ssl.CERT_OPTIONAL
    client = client_context(nodes["node-b"], None)
    assert client.minimum_version == ssl.TLSVersion.TLSv1_3
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
    user = client_context(None, nodes["node-b"].ca_file)
    assert user.check_hostname and user.verify_mode == ssl.CERT_REQUIRED


def test_context_with_unusable_files(nodes, tmp_path: Path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("nope")
    with pytest.raises(IdentityError, match=str(garbage)):
        client_context(None, garbage)


def test_peer_node_name_without_a_handshake():
    assert peer_node_name(None) is None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="x")
    assert peer_node_name(obj) is None
