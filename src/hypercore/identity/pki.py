"""The cluster CA, node certificates and the admission signature they carry.

An operator keeps one CA per cluster (`ca.pem` + `ca-key.pem`, the key
offline). Every node gets a certificate from it whose DNS SAN is the node name;
mutual TLS between nodes then needs nothing but `ca.pem`. All keys are ECDSA
P-256 and certificates are signed ecdsa-with-SHA256 (hypercore.beacon.keys),
which browsers and Go programs such as Prometheus accept.

Gossip (Serf tags) carries no certificates, only short strings, so each node
certificate also holds an *admission*: the CA's raw 64-byte (r‖s) signature
over (node name, node public key as its 33-byte compressed point, expiry). A
member that advertises those three values plus the signature can be checked
with `ca.pem` alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hypercore.beacon import keys
from hypercore.errors import HypercoreError
from hypercore.identity.files import IdentityError, _key_pem, _make_dir, _read_cert, _read_key, _write_atomic

# The admission extension's OID. Every arc fits in 31 bits, which Go's X.509
# parser requires (Prometheus refused the former 2.25.<UUID> OID: "x509:
# malformed extension OID field"). 1.3.6.1.4.1.32473 is the example enterprise
# number IANA reserves for documentation (RFC 5612): we have no registered one,
# and the extension is non-critical and means something only inside
# certificates our own cluster CA issues, which only hypercore reads for it.
ADMISSION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.32473.7.1")
_SIGNATURE_HASH = hashes.SHA256()  # certificates are signed ecdsa-with-SHA256

# Node names become DNS SANs and TLS server names: ASCII only, one DNS label's length at most.
NODE_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})", re.ASCII)
NODE_NAMES_ALLOWED = "1-63 ASCII letters, digits, '.' and '-', starting with a letter or digit"

CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca-key.pem"
MAX_DAYS = 100 * 366  # keeps datetime arithmetic far from its limits
# Validity starts 5 minutes early: nodes whose clocks lag the operator's still accept fresh certificates.
BACKDATE = dt.timedelta(minutes=5)
_ADMISSION_PREFIX = b"hypercore-admission-v1\0"


class NotAdmitted(HypercoreError):
    """A node's admission does not check out; `reason` says why in a few words."""

    def __init__(self, reason: str, *, node: str | None = None) -> None:
        self.reason = reason
        self.node = node
        super().__init__(f"node {node!r} is not admitted: {reason}" if node is not None else reason)


def admission_message(node: str, public_raw: bytes, not_after: int, reputation: float | None = None) -> bytes:
    """The bytes the CA signs to admit `node` with this key until `not_after` (unix seconds).

    With `reputation`, the CA also attests the node's prior reputation (0..1):
    the one reputation figure a node may carry that is not its own word.
    """
    message = _ADMISSION_PREFIX + node.encode("ascii") + b"\0" + public_raw + b"\0" + str(int(not_after)).encode("ascii")
    return message if reputation is None else message + b"\0" + attested(reputation).encode("ascii")


def attested(reputation: float) -> str:
    """The attested prior as it is signed and gossiped: at most 3 decimals."""
    if not 0.0 <= reputation <= 1.0:
        raise IdentityError(f"--reputation {reputation!r} must be between 0 and 1")
    return f"{reputation:.3f}".rstrip("0").rstrip(".") or "0"


@dataclass(frozen=True)
class ClusterCA:
    """The cluster CA's certificate: all a node needs to verify peers, admissions and tokens."""

    cert: x509.Certificate
    public_key: ec.EllipticCurvePublicKey
    path: Path
    fingerprint: str  # first 16 hex digits of the SHA-256 of the DER certificate


def _raw(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    return keys.public_bytes(key)


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise IdentityError(f"--days {days!r} is not allowed; use a whole number of days from 1 to {MAX_DAYS}")


def _key_usage(**on: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: on.get(n, False) for n in names})


def _extension(cert: x509.Certificate, oid: x509.ObjectIdentifier, default: Any) -> Any:
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except (x509.ExtensionNotFound, ValueError):  # ValueError: malformed extensions, as good as none
        return default


def _now(now: float | None = None) -> dt.datetime:
    return dt.datetime.fromtimestamp(time.time() if now is None else now, dt.timezone.utc).replace(microsecond=0)


def create_ca(dir: Path, *, days: int = 3650, force: bool = False) -> tuple[Path, Path]:
    """Create a fresh cluster CA in `dir`: returns (ca.pem, ca-key.pem)."""
    dir = Path(dir)
    _check_days(days)
    cert_path, key_path = dir / CA_CERT_NAME, dir / CA_KEY_NAME
    if key_path.exists() and not force:
        raise IdentityError(
            f"{key_path} already exists: it is this cluster's CA key, and every node certificate and token "
            f"depends on it. Pass --force to replace it (all existing certificates and tokens then stop working)"
        )
    _make_dir(dir, "--dir")
    key = keys.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hypercore cluster CA {secrets.token_hex(4)}")])
    start = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - BACKDATE)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, _SIGNATURE_HASH)
    )
    # Key first: a crash in between leaves a mismatched pair that load_ca_key reports, not a certificate without key.
    _write_atomic(key_path, _key_pem(key), 0o600)
    _write_atomic(cert_path, cert.public_bytes(Encoding.PEM), 0o644)
    return cert_path, key_path


def _ca_from_cert(cert: x509.Certificate, path: Path) -> ClusterCA:
    fix = "use the ca.pem written by: hypercore tls ca create"
    public_key = cert.public_key()
    if not keys.is_p256(public_key):
        raise IdentityError(f"CA certificate {path} holds {keys.kind(public_key)}; hypercore CAs are "
                            f"{keys.SCHEME} (a CA made before hypercore switched from Ed25519 must be made "
                            f"again, with its certificates and tokens); {fix}")
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    if not _extension(cert, x509.BasicConstraints.oid, x509.BasicConstraints(ca=False, path_length=None)).ca:
        raise IdentityError(f"{path} is not a CA certificate (it may be a node certificate); {fix}")
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        raise IdentityError(f"CA certificate {path} is not self-signed; {fix}") from None
    fingerprint = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()[:16]
    return ClusterCA(cert=cert, public_key=public_key, path=Path(path), fingerprint=fingerprint)


def load_ca(path: Path) -> ClusterCA:
    """Read the cluster CA certificate (no key) from `path`."""
    path = Path(path)
    fix = "copy the cluster's ca.pem here, or create a CA with: hypercore tls ca create --dir DIR"
    return _ca_from_cert(_read_cert(path, "CA certificate", fix), path)


def load_ca_key(ca_dir: Path) -> tuple[ClusterCA, ec.EllipticCurvePrivateKey]:
    """Read ca.pem and ca-key.pem from `ca_dir` and check that they belong together."""
    ca_dir = Path(ca_dir)
    fix = f"create one with: hypercore tls ca create --dir {ca_dir}"
    cert_path, key_path = ca_dir / CA_CERT_NAME, ca_dir / CA_KEY_NAME
    for p in (cert_path, key_path):
        if not p.exists():
            raise IdentityError(f"--ca-dir {ca_dir} has no {p.name} ({p}: no such file); {fix}")
    ca = load_ca(cert_path)
    key = _read_key(key_path, "CA key", fix)
    if _raw(key) != _raw(ca.public_key):
        raise IdentityError(f"CA key {key_path} does not belong to CA certificate {cert_path}; "
                            f"restore the pair from your backup, or {fix} --force")
    return ca, key


def _check_node_name(node: str, flag: str = "--node") -> None:
    if not isinstance(node, str) or not NODE_NAME_RE.fullmatch(node):
        raise IdentityError(f"{flag} {node!r} is not a valid node name; use {NODE_NAMES_ALLOWED}")
    if ".." in node:  # an empty DNS label: TLS clients cannot even encode it as a server name
        raise IdentityError(f"{flag} {node!r} has '..'; node names are host names, dots separate non-empty labels")
    with contextlib.suppress(ValueError):  # TLS clients take an address-like server name for an IP address
        ipaddress.ip_address(node)
        raise IdentityError(f"{flag} {node!r} looks like an IP address; node names must be host names "
                            f"(give the address with --ip instead)")


def create_node_cert(ca_dir: Path, node: str, out_dir: Path, *, ips: Sequence[str] = (),
                     days: int = 365, reputation: float | None = None) -> tuple[Path, Path]:
    """Issue a certificate (with admission) for `node`: returns (out_dir/NODE.pem, out_dir/NODE-key.pem).

    An existing pair for `node` is replaced: that is how a certificate is renewed.
    """
    _check_node_name(node)
    _check_days(days)
    addresses = []
    for ip in ips:
        try:
            addresses.append(ipaddress.ip_address(ip.strip() if isinstance(ip, str) else ip))
        except ValueError:
            raise IdentityError(f"--ip {ip!r} is not an IP address; give an IPv4 or IPv6 address, "
                                f"e.g. --ip 10.0.0.5 or --ip fd00::5") from None
    ca, ca_key = load_ca_key(Path(ca_dir))
    start = _now()
    end = start + dt.timedelta(days=days)
    if end > (ca_end := ca.cert.not_valid_after_utc):
        left = (ca_end - start).days
        hint = f"use --days {left} or less, or a new CA" if left >= 1 else "create a new CA (tls ca create --force)"
        raise IdentityError(f"--days {days} outlives the cluster CA {ca.path}, valid until {ca_end:%Y-%m-%d}; {hint}")
    not_after = int(end.timestamp())
    key = keys.generate()
    public_raw = _raw(key)
    admission = keys.sign(ca_key, admission_message(node, public_raw, not_after, reputation))
    if reputation is not None:  # the attested prior travels after the signature, in the same extension
        admission += attested(reputation).encode("ascii")
    sans: list[x509.GeneralName] = [x509.DNSName(node), *(x509.IPAddress(a) for a in dict.fromkeys(addresses))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - BACKDATE)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key), critical=False)
        .add_extension(x509.UnrecognizedExtension(ADMISSION_OID, admission), critical=False)
        .sign(ca_key, _SIGNATURE_HASH)
    )
    out_dir = _make_dir(Path(out_dir), "--out")
    cert_path, key_path = out_dir / f"{node}.pem", out_dir / f"{node}-key.pem"
    _write_atomic(key_path, _key_pem(key), 0o600)
    _write_atomic(cert_path, cert.public_bytes(Encoding.PEM), 0o644)
    return cert_path, key_path


def verify_admission(ca: ClusterCA, node: str, public_raw: bytes, not_after: int, signature: bytes,
                     now: float, reputation: float | None = None) -> None:
    """Check that the CA admitted `node` with key `public_raw` until `not_after` (and attested
    `reputation`, when given); raise NotAdmitted if not."""
    if not isinstance(node, str) or not NODE_NAME_RE.fullmatch(node):
        raise NotAdmitted("not a valid node name", node=str(node))
    public_raw, signature = (bytes(v) if isinstance(v, (bytearray, memoryview)) else v for v in (public_raw, signature))
    if not isinstance(public_raw, bytes) or len(public_raw) != keys.PUBLIC_KEY_BYTES:
        raise NotAdmitted(f"public key is not a {keys.PUBLIC_KEY_BYTES}-byte compressed {keys.SCHEME} point",
                          node=node)
    if not isinstance(signature, bytes) or len(signature) != keys.SIGNATURE_BYTES:
        raise NotAdmitted(f"admission signature is not {keys.SIGNATURE_BYTES} bytes", node=node)
    if isinstance(not_after, bool) or not isinstance(not_after, int):
        raise NotAdmitted("admission expiry is not a whole number of seconds", node=node)
    try:
        keys.verify(ca.public_key, signature, admission_message(node, public_raw, not_after, reputation))
    except (InvalidSignature, IdentityError):
        raise NotAdmitted("admission signature is not this cluster CA's", node=node) from None
    # Checked after the signature: an expiry is only worth reporting once we know the CA wrote it.
    if now >= not_after:
        raise NotAdmitted("admission expired", node=node)


def _check_valid(cert: x509.Certificate, when: dt.datetime, what: str, fix: str) -> None:
    if when < cert.not_valid_before_utc:
        raise IdentityError(f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC; "
                            f"check this machine's clock")
    if when > cert.not_valid_after_utc:
        raise IdentityError(f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC; {fix}")


def _names(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    san = _extension(cert, x509.SubjectAlternativeName.oid, x509.SubjectAlternativeName([]))
    return tuple(san.get_values_for_type(x509.DNSName)), tuple(str(a) for a in san.get_values_for_type(x509.IPAddress))


@dataclass(frozen=True)
class NodeIdentity:
    """This node's checked certificate, key and admission, and the CA they chain to."""

    name: str
    ca: ClusterCA
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    public_raw: bytes  # the 33-byte compressed P-256 point, as gossiped
    not_after: int  # unix seconds; the end of the certificate and of the admission
    admission: bytes  # the CA's 64-byte r‖s signature over admission_message(name, public_raw, not_after, reputation)
    dns_names: tuple[str, ...]
    ips: tuple[str, ...]
    ca_file: Path
    cert_file: Path
    key_file: Path
    reputation: float | None = None  # the prior the CA attested, if any

    @classmethod
    def load(cls, ca_file: Path, cert_file: Path, key_file: Path, node_name: str,
             now: float | None = None) -> NodeIdentity:
        """Load and check everything a node needs to be `node_name`; each problem names its file and its fix."""
        ca_file, cert_file, key_file = Path(ca_file), Path(cert_file), Path(key_file)
        when = _now(now)
        fix = f"make one with: hypercore tls cert create --ca-dir DIR --node {node_name} --out DIR"
        ca = load_ca(ca_file)
        _check_valid(ca.cert, when, f"cluster CA {ca_file}",
                     "create a new one (hypercore tls ca create --dir DIR --force) and new node certificates")
        cert = _read_cert(cert_file, "certificate", fix)
        key = _read_key(key_file, "key", fix)
        cert_key = cert.public_key()
        if not keys.is_p256(cert_key):
            raise IdentityError(f"certificate {cert_file} holds {keys.kind(cert_key)}; hypercore node "
                                f"certificates are {keys.SCHEME}; {fix}")
        assert isinstance(cert_key, ec.EllipticCurvePublicKey)
        public_raw = _raw(cert_key)
        if _raw(key) != public_raw:
            raise IdentityError(f"key {key_file} does not belong to certificate {cert_file}; use the key written "
                                f"next to it ({cert_file.stem}-key.pem), or {fix}")
        try:
            cert.verify_directly_issued_by(ca.cert)
        except (ValueError, TypeError, InvalidSignature):
            raise IdentityError(f"certificate {cert_file} was not issued by the cluster CA {ca_file} "
                                f"(fingerprint {ca.fingerprint}); it belongs to another CA. {fix}") from None
        _check_valid(cert, when, f"certificate {cert_file}", f"renew it: {fix.removeprefix('make one with: ')}")
        dns_names, ips = _names(cert)
        if node_name not in dns_names:
            raise IdentityError(f"certificate {cert_file} names {', '.join(dns_names) or 'no DNS name'}, "
                                f"not --node-name {node_name}; {fix}")
        admission = _extension(cert, ADMISSION_OID, None)
        if not isinstance(admission, x509.UnrecognizedExtension):
            raise IdentityError(f"certificate {cert_file} carries no hypercore admission (it was not made by "
                                f"hypercore tls cert create); {fix}")
        not_after = int(cert.not_valid_after_utc.timestamp())
        signature, attestation = admission.value[:keys.SIGNATURE_BYTES], admission.value[keys.SIGNATURE_BYTES:]
        try:
            reputation = float(attestation.decode("ascii")) if attestation else None
            verify_admission(ca, node_name, public_raw, not_after, signature, when.timestamp(), reputation)
        except (ValueError, UnicodeDecodeError):
            raise IdentityError(f"certificate {cert_file}: its attested reputation is garbled; {fix}") from None
        except NotAdmitted as exc:
            raise IdentityError(f"certificate {cert_file}: {exc.reason}; {fix}") from None
        return cls(name=node_name, ca=ca, cert=cert, key=key, public_raw=public_raw, not_after=not_after,
                   admission=signature, dns_names=dns_names, ips=ips, ca_file=ca_file, cert_file=cert_file,
                   key_file=key_file, reputation=reputation)
