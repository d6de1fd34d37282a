"""The cluster CA, node certificates, their admission, and NodeIdentity.load's checks."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from hypercore.beacon import keys
from hypercore.errors import HypercoreError
from hypercore.identity import (
    ADMISSION_OID,
    NODE_NAME_RE,
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

FIX = "hypercore tls cert create --ca-dir DIR --node"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def raw(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The key as gossiped: its compressed X9.62 point (33 bytes)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def is_p256_sha256(cert: x509.Certificate) -> bool:
    key = cert.public_key()
    return (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
            and cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256)


# --------------------------------------------------------------------------- the CA


def test_create_ca_writes_a_self_signed_p256_ca(tmp_path: Path):
    cert_path, key_path = create_ca(tmp_path / "new" / "ca")
    assert (cert_path, key_path) == (tmp_path / "new" / "ca" / "ca.pem", tmp_path / "new" / "ca" / "ca-key.pem")
    assert mode(key_path) == 0o600
    assert mode(cert_path.parent) == 0o700
    assert sorted(p.name for p in cert_path.parent.iterdir()) == ["ca-key.pem", "ca.pem"]  # no temporary files left
    cert = cert_of(cert_path)
    cert.verify_directly_issued_by(cert)
    assert is_p256_sha256(cert)  # ECDSA P-256, signed ecdsa-with-SHA256: what browsers and Go accept
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn.startswith("hypercore cluster CA ") and len(cn) > len("hypercore cluster CA ")
    days = (cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).days
    assert 3648 <= days <= 3650
    ca, key = load_ca_key(cert_path.parent)
    assert raw(key) == raw(ca.public_key)
    assert ca.fingerprint == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()[:16]
    assert load_ca(cert_path) == ca


def test_two_cas_differ(ca_dir: Path, other_ca_dir: Path):
    a, b = load_ca(ca_dir / "ca.pem"), load_ca(other_ca_dir / "ca.pem")
    assert a.fingerprint != b.fingerprint and a.cert.subject != b.cert.subject


def test_create_ca_refuses_to_overwrite_a_key_without_force(ca_dir: Path):
    before = (ca_dir / "ca-key.pem").read_bytes()
    with pytest.raises(IdentityError) as err:
        create_ca(ca_dir)
    assert str(ca_dir / "ca-key.pem") in str(err.value) and "--force" in str(err.value)
    assert (ca_dir / "ca-key.pem").read_bytes() == before
    create_ca(ca_dir, force=True)
    assert (ca_dir / "ca-key.pem").read_bytes() != before
    assert mode(ca_dir / "ca-key.pem") == 0o600
    load_ca_key(ca_dir)


@pytest.mark.parametrize("days", [0, -1, 10**9])
def test_create_ca_bad_days(tmp_path: Path, days: int):
    with pytest.raises(IdentityError, match="--days"):
        create_ca(tmp_path / "ca", days=days)
    assert not (tmp_path / "ca").exists()


def test_load_ca_errors(tmp_path: Path, ca_dir: Path, make_node):
    with pytest.raises(IdentityError, match="no such file.*hypercore tls ca create"):
        load_ca(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(IdentityError, match=f"{garbage} is not a PEM certificate"):
        load_ca(garbage)
    node_cert, _ = make_node("n1")
    with pytest.raises(IdentityError, match="is not a CA certificate"):
        load_ca(node_cert)
    with pytest.raises(IdentityError, match="cannot be read"):
        load_ca(tmp_path)  # a directory


def test_load_ca_key_errors(tmp_path: Path, ca_dir: Path, other_ca_dir: Path):
    with pytest.raises(IdentityError) as err:
        load_ca_key(tmp_path / "nowhere")
    assert "ca.pem" in str(err.value) and f"hypercore tls ca create --dir {tmp_path / 'nowhere'}" in str(err.value)
    (ca_dir / "ca-key.pem").replace(tmp_path / "moved-key.pem")
    with pytest.raises(IdentityError, match="has no ca-key.pem"):
        load_ca_key(ca_dir)
    (other_ca_dir / "ca-key.pem").replace(ca_dir / "ca-key.pem")
    with pytest.raises(IdentityError, match="does not belong to CA certificate"):
        load_ca_key(ca_dir)
    (ca_dir / "ca-key.pem").write_text("garbage")
    with pytest.raises(IdentityError, match="is not a PEM private key"):
        load_ca_key(ca_dir)


# --------------------------------------------------------------------------- node certificates


def test_node_cert_content(ca_dir: Path, make_node):
    cert_path, key_path = make_node("node-1.example", ips=["10.0.0.5", "fd00::5", "10.0.0.5"], days=30)
    assert (cert_path.name, key_path.name) == ("node-1.example.pem", "node-1.example-key.pem")
    assert mode(key_path) == 0o600
    ca, _ = load_ca_key(ca_dir)
    cert = cert_of(cert_path)
    cert.verify_directly_issued_by(ca.cert)
    assert is_p256_sha256(cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-1.example"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node-1.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(a) for a in ("10.0.0.5", "fd00::5")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ext = cert.extensions.get_extension_for_oid(ADMISSION_OID)
    assert not ext.critical and isinstance(ext.value, x509.UnrecognizedExtension) and len(ext.value.value) == 64
    not_after = cert.not_valid_after_utc
    assert not_after.microsecond == 0
    assert abs((not_after - dt.datetime.now(dt.timezone.utc)).total_seconds() - 30 * 86400) < 60
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    verify_admission(ca, "node-1.example", raw(key), int(not_after.timestamp()), ext.value.value,
                     time.time())


def test_node_identity_load(ca_dir: Path, make_node):
    cert_path, key_path = make_node("n1", ips=["192.0.2.1"])
    ident = NodeIdentity.load(ca_dir / "ca.pem", cert_path, key_path, "n1")
    assert ident.name == "n1" and ident.dns_names == ("n1",) and ident.ips == ("192.0.2.1",)
    assert ident.ca == load_ca(ca_dir / "ca.pem")
    assert len(ident.public_raw) == 33 and ident.public_raw == raw(ident.key)  # the compressed point
    assert ident.not_after == int(ident.cert.not_valid_after_utc.timestamp())
    assert len(ident.admission) == 64
    assert (ident.ca_file, ident.cert_file, ident.key_file) == (ca_dir / "ca.pem", cert_path, key_path)
    verify_admission(ident.ca, "n1", ident.public_raw, ident.not_after, ident.admission, time.time())


@pytest.mark.parametrize("name", ["", "-a", ".a", "a b", "é", "a/b", "a_b", "a" * 64, "a..b", "10.0.0.1", "::1"])
def test_node_cert_refuses_bad_names(ca_dir: Path, tmp_path: Path, name: str):
    with pytest.raises(IdentityError, match="--node") as err:
        create_node_cert(ca_dir, name, tmp_path / "out")
    assert repr(name) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_node_name_re():
    for ok in ("a", "A9", "n-1.example.com", "a" * 63):
        assert NODE_NAME_RE.fullmatch(ok)
    for bad in ("", "-a", "a" * 64, "a_b", "ä"):
        assert not NODE_NAME_RE.fullmatch(bad)


def test_node_cert_other_bad_inputs(ca_dir: Path, tmp_path: Path):
    with pytest.raises(IdentityError, match=r"--ip '10\.0\.0\.300' is not an IP address"):
        create_node_cert(ca_dir, "n1", tmp_path / "out", ips=["10.0.0.1", "10.0.0.300"])
    with pytest.raises(IdentityError, match="--days 0"):
        create_node_cert(ca_dir, "n1", tmp_path / "out", days=0)
    with pytest.raises(IdentityError, match="outlives the cluster CA"):
        create_node_cert(ca_dir, "n1", tmp_path / "out", days=3651)
    with pytest.raises(IdentityError) as err:
        create_node_cert(tmp_path / "no-ca", "n1", tmp_path / "out")
    assert "ca.pem" in str(err.value) and "create one with: hypercore tls ca create --dir" in str(err.value)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- NodeIdentity.load failures


def load_error(*args, **kwargs) -> str:
    with pytest.raises(IdentityError) as err:
        NodeIdentity.load(*args, **kwargs)
    return str(err.value)


def test_load_refuses_a_cert_of_another_ca(ca_dir: Path, other_ca_dir: Path, make_node):
    cert, key = make_node("n1", ca=other_ca_dir)
    msg = load_error(ca_dir / "ca.pem", cert, key, "n1")
    assert f"certificate {cert} was not issued by the cluster CA {ca_dir / 'ca.pem'}" in msg
    assert f"{FIX} n1 --out DIR" in msg


def test_load_refuses_a_wrong_node_name(ca_dir: Path, make_node):
    cert, key = make_node("n1")
    msg = load_error(ca_dir / "ca.pem", cert, key, "n2")
    assert msg == (f"certificate {cert} names n1, not --node-name n2; "
                   f"make one with: hypercore tls cert create --ca-dir DIR --node n2 --out DIR")


def test_load_refuses_a_key_of_another_cert(ca_dir: Path, make_node):
    cert, _ = make_node("n1")
    _, other_key = make_node("n2")
    msg = load_error(ca_dir / "ca.pem", cert, other_key, "n1")
    assert f"key {other_key} does not belong to certificate {cert}" in msg and FIX in msg


def test_load_refuses_an_expired_cert(ca_dir: Path, make_node):
    cert, key = make_node("n1", days=1)
    msg = load_error(ca_dir / "ca.pem", cert, key, "n1", now=time.time() + 2 * 86400)
    assert f"certificate {cert} expired on" in msg and "renew it: hypercore tls cert create" in msg


def test_load_refuses_a_cert_not_valid_yet(ca_dir: Path, tmp_path: Path):
    cert, key = _sign_by_ca(ca_dir, tmp_path, "n1", admission=bytes(64), valid_from=dt.timedelta(hours=1))
    msg = load_error(ca_dir / "ca.pem", cert, key, "n1")
    assert f"certificate {cert} is not valid before" in msg and "clock" in msg


def _sign_by_ca(ca_dir: Path, tmp_path: Path, node: str, admission: bytes | None,
                valid_from: dt.timedelta = dt.timedelta(minutes=-1), key=None) -> tuple[Path, Path]:
    """A certificate the CA signed, but not through create_node_cert (for `key`, a fresh P-256 key by default)."""
    ca, ca_key = load_ca_key(ca_dir)
    key = key or keys.generate()
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + valid_from)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node)]), critical=False)
    )
    if admission is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(ADMISSION_OID, admission), critical=False)
    cert_path, key_path = tmp_path / f"{node}-hand.pem", tmp_path / f"{node}-hand-key.pem"
    cert_path.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_load_refuses_a_cert_without_admission(ca_dir: Path, tmp_path: Path):
    cert, key = _sign_by_ca(ca_dir, tmp_path, "n1", admission=None)
    msg = load_error(ca_dir / "ca.pem", cert, key, "n1")
    assert f"certificate {cert} carries no hypercore admission" in msg and f"{FIX} n1" in msg


def test_load_refuses_a_cert_with_a_forged_admission(ca_dir: Path, other_ca_dir: Path, tmp_path: Path):
    cert, key = _sign_by_ca(ca_dir, tmp_path, "n1", admission=bytes(64))
    msg = load_error(ca_dir / "ca.pem", cert, key, "n1")
    assert f"certificate {cert}: admission signature is not this cluster CA's" in msg and FIX in msg


def test_load_refuses_garbage_and_missing_files(ca_dir: Path, tmp_path: Path, make_node):
    cert, key = make_node("n1")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\xffnot pem at all")
    ca = ca_dir / "ca.pem"
    msg = load_error(ca, garbage, key, "n1")
    assert f"certificate {garbage} is not a PEM certificate" in msg and FIX in msg
    msg = load_error(ca, cert, garbage, "n1")
    assert f"key {garbage} is not a PEM private key" in msg and FIX in msg
    msg = load_error(garbage, cert, key, "n1")
    assert f"CA certificate {garbage} is not a PEM certificate" in msg and "ca.pem" in msg
    msg = load_error(ca, tmp_path / "absent.pem", key, "n1")
    assert f"certificate {tmp_path / 'absent.pem'}: no such file" in msg and FIX in msg
    msg = load_error(ca, cert, ca_dir / "ca-key.pem", "n1")  # a P-256 key, but the CA's
    assert "does not belong to certificate" in msg


def test_load_refuses_an_expired_ca(ca_dir: Path, make_node):
    cert, key = make_node("n1")
    msg = load_error(ca_dir / "ca.pem", cert, key, "n1", now=time.time() + 3651 * 86400)
    assert f"cluster CA {ca_dir / 'ca.pem'} expired on" in msg


# --------------------------------------------------------------------------- verify_admission


def test_admission_message_layout():
    assert admission_message("n1", b"K" * 33, 1700000000) == (
        b"hypercore-admission-v1\0n1\0" + b"K" * 33 + b"\0" + b"1700000000"
    )
    assert admission_message("n1", b"K" * 33, 1700000000, 0.75) == (
        b"hypercore-admission-v1\0n1\0" + b"K" * 33 + b"\0" + b"1700000000" + b"\0" + b"0.75"
    )


def test_admission_oid_is_one_go_can_parse():
    # Go's x509 (Prometheus, any Go client) refuses an OID with an arc above 2**31 - 1.
    assert ADMISSION_OID.dotted_string == "1.3.6.1.4.1.32473.7.1"
    assert all(0 <= int(arc) < 2**31 for arc in ADMISSION_OID.dotted_string.split("."))


def test_verify_admission(load_node, other_ca_dir: Path, make_node):
    ident = load_node("n1")
    args = ("n1", ident.public_raw, ident.not_after, ident.admission)
    now = time.time()
    verify_admission(ident.ca, *args, now)  # good
    verify_admission(ident.ca, "n1", bytearray(ident.public_raw), ident.not_after, memoryview(ident.admission), now)

    def reason(*a, ca=ident.ca, at=now) -> str:
        with pytest.raises(NotAdmitted) as err:
            verify_admission(ca, *a, at)
        assert isinstance(err.value, HypercoreError)
        return err.value.reason

    sig_wrong = "admission signature is not this cluster CA's"
    assert reason("n2", *args[1:]) == sig_wrong
    assert reason("n1", bytes(33), *args[2:]) == sig_wrong
    other_y = bytes([ident.public_raw[0] ^ 1]) + ident.public_raw[1:]  # 0x02 <-> 0x03: the point's other y
    assert reason("n1", other_y, *args[2:]) == sig_wrong
    assert reason("n1", ident.public_raw, ident.not_after + 86400, ident.admission) == sig_wrong
    tampered = bytes([ident.admission[0] ^ 1]) + ident.admission[1:]
    assert reason("n1", ident.public_raw, ident.not_after, tampered) == sig_wrong
    other = load_ca(other_ca_dir / "ca.pem")
    assert reason(*args, ca=other) == sig_wrong
    assert reason(*args, at=ident.not_after) == "admission expired"
    assert reason(*args, at=ident.not_after + 1) == "admission expired"
    assert "33-byte compressed ECDSA P-256 point" in reason("n1", ident.public_raw[:32], *args[2:])
    assert "33-byte" in reason("n1", ident.key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint), *args[2:])
    assert "64" in reason("n1", ident.public_raw, ident.not_after, ident.admission[:63])
    assert "node name" in reason("n 1", *args[1:])
    with pytest.raises(NotAdmitted, match="node 'n2' is not admitted: admission signature"):
        verify_admission(ident.ca, "n2", *args[1:], now)


# --------------------------------------------------------------------------- keys that are not P-256


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_keys_and_certificates_that_are_not_p256_are_refused_naming_the_file(ca_dir: Path, tmp_path: Path,
                                                                              make_node):
    cert, key = make_node("n1")
    ca = ca_dir / "ca.pem"
    # An Ed25519 node key (what hypercore made before it switched to P-256).
    ed_key = tmp_path / "ed-key.pem"
    ed_key.write_bytes(_pem(Ed25519PrivateKey.generate()))
    msg = load_error(ca, cert, ed_key, "n1")
    assert msg.startswith(f"key {ed_key} holds an Ed25519 key; hypercore keys are ECDSA P-256") and FIX in msg
    # A P-384 CA key.
    (ca_dir / "ca-key.pem").write_bytes(_pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(IdentityError) as err:
        load_ca_key(ca_dir)
    assert str(err.value).startswith(f"CA key {ca_dir / 'ca-key.pem'} holds an ECDSA secp384r1 key; "
                                     f"hypercore keys are ECDSA P-256")


def test_a_node_certificate_that_is_not_p256_is_refused(tmp_path: Path):
    ca_dir = tmp_path / "ca"
    create_ca(ca_dir)
    cert, _ = _sign_by_ca(ca_dir, tmp_path, "n1", admission=bytes(64), key=ec.generate_private_key(ec.SECP384R1()))
    _, key = create_node_cert(ca_dir, "n1", tmp_path / "certs")  # a P-256 key: the certificate is the problem
    msg = load_error(ca_dir / "ca.pem", cert, key, "n1")
    assert msg.startswith(f"certificate {cert} holds an ECDSA secp384r1 key; hypercore node certificates are "
                          f"ECDSA P-256") and FIX in msg


def test_an_ed25519_ca_is_refused(tmp_path: Path):
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "an old hypercore CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, None))
    path = tmp_path / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(IdentityError) as err:
        load_ca(path)
    assert str(err.value).startswith(f"CA certificate {path} holds an Ed25519 key; hypercore CAs are ECDSA P-256")
    assert "hypercore tls ca create" in str(err.value)
