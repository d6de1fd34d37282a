"""hypercore's one signature scheme, ECDSA P-256 with SHA-256, and the node key of --insecure nodes.

Every key of a cluster is an ECDSA key on P-256 (secp256r1) signing SHA-256
digests: the CA's, each node's (certified, it signs the beacon), the key an
--insecure node keeps in its data dir. That is what browsers and Go's TLS and
X.509 code accept; Ed25519 they do not. This module is the only one that knows
the curve; the rest of hypercore calls these functions:

- `generate`, `load_private_pem`, `private_pem`: make, read and write keys;
- `public_bytes` (33 bytes, the compressed X9.62 point) and `fingerprint`: a
  key as gossiped and as a short id;
- `sign` / `verify`: signatures as 64 raw bytes, r‖s (big-endian, 32 bytes
  each), the compact fixed-size form gossip and admissions carry.

Certificates and tokens use the same keys through their own standard
encodings (ecdsa-with-SHA256 in X.509, ES256 in JWTs).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from hypercore.errors import HypercoreError

KEY_FILE = "node.key"
SCHEME = "ECDSA P-256"
PUBLIC_KEY_BYTES = 33  # compressed point: 0x02 or 0x03, then x
SIGNATURE_BYTES = 64  # r‖s
_SCALAR_BYTES = 32
_ECDSA = ec.ECDSA(hashes.SHA256())


class KeyError_(HypercoreError):
    """The node key exists but cannot be used."""


class WrongKeyType(HypercoreError):
    """A key, or a certificate's key, of another type than ECDSA P-256; the message says which type."""


def generate() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def is_p256(key: object) -> bool:
    """Whether `key` (private or public) is an ECDSA key on P-256."""
    return isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and isinstance(
        key.curve, ec.SECP256R1)


def kind(key: object) -> str:
    """What a key is, for messages, with its article: "an Ed25519 key", "an ECDSA secp384r1 key", "a DSA key"."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        name = f"ECDSA {key.curve.name}"
    else:
        name = type(key).__name__.lstrip("_").removesuffix("PrivateKey").removesuffix("PublicKey") or "unknown"
    return f"{'an' if name[0] in 'AEFHILMNORSX' else 'a'} {name} key"


def load_private_pem(data: bytes) -> ec.EllipticCurvePrivateKey:
    """An unencrypted PEM private key that must be P-256.

    Raises TypeError (encrypted), ValueError or UnsupportedAlgorithm (not a
    private key) and WrongKeyType (a key, but not P-256: the message names
    the type, callers prefix the file).
    """
    key = serialization.load_pem_private_key(data, password=None)
    if not is_p256(key):
        raise WrongKeyType(f"holds {kind(key)}; hypercore keys are {SCHEME} (secp256r1)")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_bytes(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The 33-byte compressed point of a key (private or public): the form gossip and admissions carry."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def public_key_from_bytes(raw: bytes) -> ec.EllipticCurvePublicKey:
    """The key of a 33-byte compressed P-256 point; ValueError if `raw` is not one."""
    if not isinstance(raw, bytes) or len(raw) != PUBLIC_KEY_BYTES or raw[0] not in (2, 3):
        raise ValueError(f"not a {PUBLIC_KEY_BYTES}-byte compressed {SCHEME} point")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)  # ValueError: not on the curve


def fingerprint(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey | bytes) -> str:
    """Short, stable id of a public key: the first 16 hex digits of the SHA-256 of its compressed point."""
    raw = key if isinstance(key, bytes) else public_bytes(key)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA P-256 / SHA-256 signature of `message`, as 64 raw bytes r‖s."""
    r, s = decode_dss_signature(key.sign(message, _ECDSA))
    return r.to_bytes(_SCALAR_BYTES, "big") + s.to_bytes(_SCALAR_BYTES, "big")


def verify(public: ec.EllipticCurvePublicKey | bytes, signature: bytes, message: bytes) -> None:
    """Check a 64-byte r‖s signature by `public` (a key or its 33-byte point) over `message`.

    Raises InvalidSignature for anything that is not such a signature: a wrong
    length, a key that is not a P-256 point, a signature by another key.
    """
    try:
        key = public_key_from_bytes(bytes(public)) if isinstance(public, (bytes, bytearray, memoryview)) else public
        if not is_p256(key) or not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("not a P-256 public key")
        signature = bytes(signature)
        if len(signature) != SIGNATURE_BYTES:
            raise ValueError(f"signature is not {SIGNATURE_BYTES} bytes")
        r, s = int.from_bytes(signature[:_SCALAR_BYTES], "big"), int.from_bytes(signature[_SCALAR_BYTES:], "big")
        key.verify(encode_dss_signature(r, s), message, _ECDSA)
    except (ValueError, TypeError):
        raise InvalidSignature from None


def load_or_create_node_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """Read <data_dir>/node.key (an --insecure node's beacon key), creating it (0600, atomically) on first start."""
    path = data_dir / KEY_FILE
    if path.exists():
        fix = "move it away to create a new identity (it is only this --insecure node's beacon key)"
        try:
            return load_private_pem(path.read_bytes())
        except WrongKeyType as exc:
            raise KeyError_(f"{path}: {exc}; {fix}") from None
        except (ValueError, TypeError, UnsupportedAlgorithm, OSError) as exc:
            raise KeyError_(f"{path}: not a readable {SCHEME} private key ({exc}); {fix}") from None
    data_dir.mkdir(parents=True, exist_ok=True)
    key = generate()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem(key))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return key
