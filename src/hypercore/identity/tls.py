"""TLS contexts for the cluster: mutual TLS between nodes, server-only TLS for users.

Hypercore certificates are ECDSA P-256, which browsers and Go clients such
as Prometheus accept. Every context here requires TLS 1.3, which all of
them speak. Nodes authenticate each other by the DNS SAN of their
certificates (the node name); users authenticate with bearer tokens (see
tokens.py) over a connection that only the server authenticates.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from hypercore.identity.pki import NODE_NAME_RE, IdentityError, NodeIdentity


def _base(protocol: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # Strict X.509 checks: our certificates carry every extension they ask for,
    # so anything less is not one of ours.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def _load_chain(ctx: ssl.SSLContext, identity: NodeIdentity) -> None:
    try:
        ctx.load_cert_chain(str(identity.cert_file), str(identity.key_file))
    except (ssl.SSLError, OSError) as exc:
        raise IdentityError(f"certificate {identity.cert_file} with key {identity.key_file} cannot be used "
                            f"for TLS: {exc}") from None


def _load_ca(ctx: ssl.SSLContext, ca_file: Path) -> None:
    try:
        ctx.load_verify_locations(cafile=str(ca_file))
    except (ssl.SSLError, OSError) as exc:
        raise IdentityError(f"CA certificate {ca_file} cannot be used for TLS: {exc}") from None


def server_context(identity: NodeIdentity) -> ssl.SSLContext:
    """The API/peer listener's context: serves this node's certificate, verifies any client certificate.

    Client certificates are optional (users connect without one and send a
    token); one that is sent must chain to the cluster CA or the handshake fails.
    """
    ctx = _base(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(ctx, identity)
    _load_ca(ctx, identity.ca_file)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    # No TLS 1.3 session tickets: no client of ours resumes a session (a node's connections to a peer are
    # kept alive instead, the CLI is a new process each time), and issuing two tickets after every handshake
    # was a fifth of the server's CPU for a new connection (bench/tls_connect.py: 1.47 -> 1.17 ms).
    ctx.num_tickets = 0
    return ctx


def client_context(identity: NodeIdentity | None, ca_file: Path | None) -> ssl.SSLContext:
    """A client context that verifies the server against the cluster CA and its node name.

    With `identity` (node to node) it also presents this node's certificate;
    without (the CLI) it is a user's context. The CA is `ca_file`, else the
    identity's; with neither, the system's trust store (an API behind a proxy
    with a public certificate).
    """
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname=True, CERT_REQUIRED
    ca = ca_file if ca_file is not None else identity.ca_file if identity is not None else None
    if ca is not None:
        _load_ca(ctx, Path(ca))
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if identity is not None:
        _load_chain(ctx, identity)
    return ctx


def peer_node_name(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The node name in the peer's verified certificate, or None (no certificate: a user).

    Only meaningful on connections whose handshake verified the certificate
    against the cluster CA (our contexts do); getpeercert() is empty otherwise.
    """
    if ssl_object is None:
        return None
    try:
        cert = ssl_object.getpeercert()
    except ValueError:  # handshake not done
        return None
    if not cert:
        return None
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS" and isinstance(value, str) and NODE_NAME_RE.fullmatch(value):
            return value
    return None
