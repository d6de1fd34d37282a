"""The cluster's identity layer: CA, node certificates and admissions, user tokens, TLS contexts.

An operator holds one CA per cluster; all its keys are ECDSA P-256 (see
hypercore.beacon.keys). Nodes prove who they are with
CA-issued certificates (mutual TLS) and, in gossip, with the admission
signature those certificates carry; users prove who they are with bearer
tokens the CA key signed. Verifying any of them needs only `ca.pem`.
"""

from hypercore.identity.pki import (
    ADMISSION_OID,
    NODE_NAME_RE,
    ClusterCA,
    IdentityError,
    NodeIdentity,
    NotAdmitted,
    admission_message,
    create_ca,
    create_node_cert,
    load_ca,
    load_ca_key,
    verify_admission,
)
from hypercore.identity.tls import client_context, peer_node_name, server_context
from hypercore.identity.tokens import USER_NAME_RE, TokenInvalid, TokenVerifier, User, create_token, parse_ttl

__all__ = [
    "ADMISSION_OID",
    "NODE_NAME_RE",
    "USER_NAME_RE",
    "ClusterCA",
    "IdentityError",
    "NodeIdentity",
    "NotAdmitted",
    "TokenInvalid",
    "TokenVerifier",
    "User",
    "admission_message",
    "client_context",
    "create_ca",
    "create_node_cert",
    "create_token",
    "load_ca",
    "load_ca_key",
    "parse_ttl",
    "peer_node_name",
    "server_context",
    "verify_admission",
]
