"""The node's persistent ed25519 identity: it signs the beacon, its fingerprint is the beacon id."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hypercore.errors import HypercoreError

KEY_FILE = "node.key"


class KeyError_(HypercoreError):
    """The node key exists but cannot be used."""


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey | bytes) -> str:
    """Short, stable id of a public key: the first 16 hex digits of its SHA-256."""
    raw = key if isinstance(key, bytes) else public_bytes(key)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_or_create_node_key(data_dir: Path) -> Ed25519PrivateKey:
    """Read <data_dir>/node.key, creating it (mode 0600, written atomically) on first start."""
    path = data_dir / KEY_FILE
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, OSError) as exc:
            raise KeyError_(f"{path}: not a readable ed25519 private key ({exc}); move it away to create a new identity") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyError_(f"{path}: holds a {type(key).__name__}, expected an ed25519 key")
        return key
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return key
