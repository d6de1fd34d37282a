"""Reading and writing the PEM files of identity/: bounded reads, clear errors, keys born 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from hypercore.beacon import keys
from hypercore.errors import HypercoreError

MAX_PEM_BYTES = 256 * 1024  # far above any real certificate or key; caps what a wrong path can make us read


class IdentityError(HypercoreError):
    """A CA, certificate, key or name that cannot be used, with the fix in the message."""


def _read_pem(path: Path, what: str, fix: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except FileNotFoundError:
        raise IdentityError(f"{what} {path}: no such file; {fix}") from None
    except OSError as exc:
        raise IdentityError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM_BYTES:
        raise IdentityError(f"{what} {path} is larger than {MAX_PEM_BYTES} bytes; it is not a PEM file. {fix}")
    return data


def _read_cert(path: Path, what: str, fix: str) -> x509.Certificate:
    try:
        certs = x509.load_pem_x509_certificates(_read_pem(path, what, fix))
    except ValueError:
        raise IdentityError(f"{what} {path} is not a PEM certificate; {fix}") from None
    if len(certs) != 1:
        raise IdentityError(f"{what} {path} holds {len(certs)} certificates; expected exactly one. {fix}")
    return certs[0]


def _read_key(path: Path, what: str, fix: str) -> ec.EllipticCurvePrivateKey:
    try:
        return keys.load_private_pem(_read_pem(path, what, fix))
    except TypeError:
        raise IdentityError(f"{what} {path} is encrypted; hypercore reads unencrypted keys (0600). {fix}") from None
    except (ValueError, UnsupportedAlgorithm):
        raise IdentityError(f"{what} {path} is not a PEM private key; {fix}") from None
    except keys.WrongKeyType as exc:  # "holds an Ed25519 key; hypercore keys are ECDSA P-256 (secp256r1)"
        raise IdentityError(f"{what} {path} {exc}; {fix}") from None


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file created with `mode` (never wider), then rename over `path`."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise IdentityError(f"cannot write {path}: {exc.strerror or exc}") from None


def _make_dir(path: Path, flag: str) -> Path:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityError(f"{flag} {path}: cannot create the directory: {exc.strerror or exc}") from None
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return keys.private_pem(key)
