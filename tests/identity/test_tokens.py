"""User tokens: minted with the CA key, verified with ca.pem alone, strictly, and cached without outliving expiry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from hypercore.identity import (
    USER_NAME_RE,
    IdentityError,
    TokenInvalid,
    TokenVerifier,
    User,
    create_token,
    load_ca,
    load_ca_key,
    parse_ttl,
)

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(name: str = "alice", now: float = T0, ttl: int = 3600, **extra) -> dict:
    base = {"iss": "hypercore", "aud": "hypercore-api", "sub": name, "iat": int(now), "nbf": int(now),
            "exp": int(now) + ttl, "jti": "j", "mgmt": False}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def sign_with_ca(ca_dir: Path, payload: dict, **headers) -> str:
    ca, key = load_ca_key(ca_dir)
    return jwt.encode(payload, key, algorithm="ES256", headers={"kid": ca.fingerprint, **headers})


def hand_made(header: dict, payload: dict, signature: bytes | None = None, secret: bytes | None = None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if secret is not None:
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature or b'')}"


@pytest.fixture
def verifier(ca_dir: Path) -> TokenVerifier:
    return TokenVerifier(load_ca(ca_dir / "ca.pem"), clock=Clock())


def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenInvalid) as err:
        verifier.verify(token)
    return str(err.value)


def test_roundtrip_user_and_management(ca_dir: Path, verifier: TokenVerifier):
    token = create_token(ca_dir, "alice", now=T0)
    assert verifier.verify(token) == User("alice", management=False)
    assert verifier.verify(create_token(ca_dir, "ops@example.org", management=True, now=T0)) == User(
        "ops@example.org", management=True)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == load_ca(ca_dir / "ca.pem").fingerprint
    body = jwt.decode(token, options={"verify_signature": False})
    assert body["iss"] == "hypercore" and body["aud"] == "hypercore-api" and body["sub"] == "alice"
    assert body["iat"] == body["nbf"] == int(T0) and body["exp"] == int(T0) + 720 * 3600
    assert body["mgmt"] is False and isinstance(body["jti"], str) and body["jti"]
    assert create_token(ca_dir, "alice", now=T0) != token  # a fresh jti each time


def test_verifier_needs_only_the_certificate(ca_dir: Path, tmp_path: Path):
    token = create_token(ca_dir, "alice", now=T0)
    only_cert = tmp_path / "node" / "ca.pem"
    only_cert.parent.mkdir()
    only_cert.write_bytes((ca_dir / "ca.pem").read_bytes())
    assert TokenVerifier(load_ca(only_cert), clock=Clock()).verify(token).name == "alice"


def test_expired_and_leeway(ca_dir: Path):
    token = create_token(ca_dir, "alice", ttl_seconds=60, now=T0)
    ca = load_ca(ca_dir / "ca.pem")
    assert TokenVerifier(ca, clock=Clock(T0 + 60 + 29)).verify(token).name == "alice"  # within the 30 s leeway
    assert "expired" in refused(TokenVerifier(ca, clock=Clock(T0 + 60 + 30)), token)
    assert "expired" in refused(TokenVerifier(ca, leeway=0, clock=Clock(T0 + 60)), token)


def test_not_yet_valid(ca_dir: Path, verifier: TokenVerifier):
    token = create_token(ca_dir, "alice", now=T0 + 3600)
    assert "not valid yet" in refused(verifier, token)
    verifier.clock.t = T0 + 3600 - 10  # within the leeway
    assert verifier.verify(token).name == "alice"


def test_cache_does_not_extend_expiry(ca_dir: Path, verifier: TokenVerifier):
    token = create_token(ca_dir, "alice", ttl_seconds=120, now=T0)
    assert verifier.verify(token).name == "alice"
    verifier.clock.t = T0 + 100
    assert verifier.verify(token).name == "alice"  # a cache hit
    verifier.clock.t = T0 + 120 + 31
    assert "expired" in refused(verifier, token)
    assert "expired" in refused(verifier, token)  # and stays refused


def test_cache_makes_repeat_verification_cheap(ca_dir: Path, verifier: TokenVerifier):
    token = create_token(ca_dir, "alice", now=T0)
    cold = TokenVerifier(load_ca(ca_dir / "ca.pem"), clock=Clock())
    n = 300

    def timed(fn) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - start

    verifier.verify(token)
    hot = timed(lambda: verifier.verify(token))
    uncached = timed(lambda: cold._verify_uncached(token, T0))
    assert hot * 5 < uncached, (hot, uncached)
    assert hot / n < 50e-6


def test_cache_is_bounded(ca_dir: Path, verifier: TokenVerifier):
    from hypercore.identity import tokens

    ca, key = load_ca_key(ca_dir)
    for i in range(tokens.CACHE_SIZE + 20):
        verifier.verify(jwt.encode(claims(f"u{i}"), key, algorithm="ES256", headers={"kid": ca.fingerprint}))
    assert len(verifier._cache) == tokens.CACHE_SIZE


def test_other_ca_is_refused(ca_dir: Path, other_ca_dir: Path, verifier: TokenVerifier):
    token = create_token(other_ca_dir, "alice", now=T0)
    assert "not signed by this cluster's CA" in refused(verifier, token)
    # The same, naming our CA's key id: the signature itself is refused.
    _, other_key = load_ca_key(other_ca_dir)
    forged = jwt.encode(claims(), other_key, algorithm="ES256", headers={"kid": verifier.ca.fingerprint})
    assert refused(verifier, forged) == "token is not signed by this cluster's CA"


def test_tokens_of_other_algorithms_are_refused(verifier: TokenVerifier):
    # EdDSA: what hypercore issued before its keys became ECDSA P-256.
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    kid = {"kid": verifier.ca.fingerprint}
    old = jwt.encode(claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers=kid)
    assert "algorithm 'EdDSA'; only ES256 tokens" in refused(verifier, old)
    p384 = jwt.encode(claims(), ec.generate_private_key(ec.SECP384R1()), algorithm="ES384", headers=kid)
    assert "algorithm 'ES384'" in refused(verifier, p384)


def test_alg_none_and_hmac_with_the_public_key_are_refused(ca_dir: Path, verifier: TokenVerifier):
    payload = claims()
    kid = verifier.ca.fingerprint
    assert "algorithm 'none'" in refused(verifier, hand_made({"alg": "none", "typ": "JWT"}, payload))
    assert "algorithm 'none'" in refused(verifier, hand_made({"alg": "none", "kid": kid}, payload, b"x"))
    public = verifier.ca.public_key
    for secret in (
        public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint),
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        (ca_dir / "ca.pem").read_bytes(),
    ):
        forged = hand_made({"alg": "HS256", "typ": "JWT", "kid": kid}, payload, secret=secret)
        assert "algorithm 'HS256'" in refused(verifier, forged)
    assert "algorithm None" in refused(verifier, hand_made({"typ": "JWT"}, payload, b"x"))


def test_tampered_payload_is_refused(ca_dir: Path, verifier: TokenVerifier):
    token = create_token(ca_dir, "alice", now=T0)
    header, _, signature = token.split(".")
    evil = f"{header}.{b64(json.dumps(claims('alice', mgmt=True)).encode())}.{signature}"
    assert refused(verifier, evil) == "token is not signed by this cluster's CA"
    evil = f"{header}.{b64(json.dumps(claims('root')).encode())}.{signature}"
    assert refused(verifier, evil) == "token is not signed by this cluster's CA"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "ä.ö.ü", 42, None, b"bytes"])
def test_malformed_tokens(verifier: TokenVerifier, token):
    assert "malformed" in refused(verifier, token)


def test_too_long(ca_dir: Path, verifier: TokenVerifier):
    assert "longer than 4096" in refused(verifier, "a" * 4097)
    long_claims = claims(pad="x" * 4000)
    assert "longer than 4096" in refused(verifier, sign_with_ca(ca_dir, long_claims))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (claims(aud="other-api"), "not for this API"),
        (claims(aud=["hypercore-api", "x"]), "not for this API"),
        (claims(iss="someone"), "not issued by hypercore"),
        (claims(exp=None), "no 'exp' claim"),
        (claims(iat=None), "no 'iat' claim"),
        (claims(sub=None), "no 'sub' claim"),
        (claims(sub="bob smith"), "user name 'bob smith' is not allowed"),
        (claims(sub=7), "malformed"),
        (claims(mgmt="yes"), "'mgmt' is not true or false"),
        (claims(exp="soon"), "'exp' is not a number"),
        (claims(exp=True), "'exp' is not a number"),
    ],
)
def test_claims_are_checked(ca_dir: Path, verifier: TokenVerifier, payload: dict, expected: str):
    assert expected in refused(verifier, sign_with_ca(ca_dir, payload))


def test_other_key_id_is_refused_with_both_ids(ca_dir: Path, verifier: TokenVerifier):
    msg = refused(verifier, sign_with_ca(ca_dir, claims(), kid="0123456789abcdef"))
    assert "0123456789abcdef" in msg and verifier.ca.fingerprint in msg


def test_create_token_refuses_bad_input(ca_dir: Path, tmp_path: Path):
    for name in ("", "bob smith", "-bob", "é", "a" * 65, "a/b"):
        with pytest.raises(IdentityError, match="--name") as err:
            create_token(ca_dir, name)
        assert repr(name) in str(err.value)
    for ttl in (0, -5, 3651 * 86400):
        with pytest.raises(IdentityError, match="duration"):
            create_token(ca_dir, "alice", ttl_seconds=ttl)
    with pytest.raises(IdentityError, match="hypercore tls ca create"):
        create_token(tmp_path / "no-ca", "alice")
    assert USER_NAME_RE.fullmatch("a" * 64) and not USER_NAME_RE.fullmatch("a" * 65)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("720h", 720 * 3600), ("30d", 30 * 86400), ("90m", 5400), ("45s", 45), ("3600", 3600), (" 10m ", 600),
     ("3650d", 3650 * 86400)],
)
def test_parse_ttl_good(text: str, seconds: int):
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0h", "-5", "5y", "1.5h", "h", "3651d", "abc", "10 m", "1e3", "٣",
                                  "9" * 40])
def test_parse_ttl_bad(text: str):
    with pytest.raises(IdentityError) as err:
        parse_ttl(text)
    assert repr(text) in str(err.value)
