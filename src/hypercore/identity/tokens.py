"""User bearer tokens: JWTs signed by the cluster CA key, checked with ca.pem alone.

The operator mints tokens where the CA key lives; any node verifies them with
the CA certificate it already has for TLS, so there is no token database to
distribute or keep in sync. Revocation is by expiry (keep TTLs short) or by
replacing the CA.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from hypercore.errors import HypercoreError
from hypercore.identity.pki import ClusterCA, IdentityError, load_ca_key
from hypercore.workload import USER_NAME

ISSUER = "hypercore"
AUDIENCE = "hypercore-api"
ALGORITHM = "ES256"  # ECDSA P-256 with SHA-256: the CA key (hypercore.beacon.keys)
USER_NAME_RE = re.compile(USER_NAME, re.ASCII)
USER_NAMES_ALLOWED = "1-64 ASCII letters, digits, '.', '_', '@' and '-', starting with a letter or digit"
MAX_TOKEN_CHARS = 4096
MAX_TTL_SECONDS = 3650 * 86400  # 10 years
CACHE_SIZE = 4096
_TTL_RE = re.compile(r"([0-9]{1,12})([smhd]?)", re.ASCII)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenInvalid(HypercoreError):
    """A bearer token that does not authenticate anyone; the message says why."""


@dataclass(frozen=True)
class User:
    """Who a verified token speaks for."""

    name: str
    management: bool = False  # may change the cluster itself (policy, membership), not only use it


def parse_ttl(text: str) -> int:
    """Seconds in a duration like "720h", "30d", "90m", "45s" or "3600"; more than 0, at most 10 years."""
    match = _TTL_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise IdentityError(f"duration {text!r} is not allowed; use a whole number with an optional unit "
                            f"s, m, h or d, e.g. 720h, 30d, 90m, 45s or 3600 (seconds)")
    seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
    _check_ttl(seconds, repr(text))
    return seconds


def _check_ttl(seconds: int, shown: str) -> None:
    if seconds <= 0:
        raise IdentityError(f"duration {shown} is not allowed; it must be more than 0")
    if seconds > MAX_TTL_SECONDS:
        raise IdentityError(f"duration {shown} is not allowed; at most 10 years (3650d) are")


def create_token(ca_dir: Path, name: str, *, ttl_seconds: int = 720 * 3600, management: bool = False,
                 now: float | None = None) -> str:
    """Mint a token for user `name`, signed with the CA key in `ca_dir`."""
    if not isinstance(name, str) or not USER_NAME_RE.fullmatch(name):
        raise IdentityError(f"--name {name!r} is not a valid user name; use {USER_NAMES_ALLOWED}")
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
        raise IdentityError(f"ttl {ttl_seconds!r} is not a whole number of seconds")
    _check_ttl(ttl_seconds, f"{ttl_seconds}s")
    ca, key = load_ca_key(Path(ca_dir))
    iat = int(time.time() if now is None else now)
    claims = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": name, "iat": iat, "nbf": iat, "exp": iat + ttl_seconds,
        "jti": secrets.token_urlsafe(12), "mgmt": bool(management),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": ca.fingerprint})


def _number(payload: dict[str, Any], claim: str) -> float:
    value = payload.get(claim)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenInvalid(f"token is malformed: claim {claim!r} is not a number")
    return float(value)


class TokenVerifier:
    """Checks bearer tokens against the cluster CA, with a cache for the tokens already seen.

    Every API call carries a token, and an ES256 (ECDSA P-256) verification
    costs tens of microseconds; a dictionary lookup costs well under one. Only tokens that
    verified are cached (so only tokens the CA signed can fill it), each
    until its own expiry, which is checked again on every hit.
    """

    def __init__(self, ca: ClusterCA, *, leeway: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.ca = ca
        self.leeway = float(leeway)
        self.clock = clock
        self._cache: OrderedDict[str, tuple[User, float]] = OrderedDict()  # token -> (user, exp)
        self._lock = threading.Lock()

    def verify(self, token: str) -> User:
        """The user `token` speaks for; TokenInvalid (saying why) if it does not authenticate anyone."""
        if not isinstance(token, str):
            raise TokenInvalid("token is malformed: not a string")
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenInvalid(f"token is malformed: longer than {MAX_TOKEN_CHARS} characters")
        now = self.clock()
        with self._lock:
            hit = self._cache.get(token)
            if hit is not None:
                if now - self.leeway < hit[1]:
                    self._cache.move_to_end(token)
                    return hit[0]
                del self._cache[token]
        user, exp = self._verify_uncached(token, now)
        with self._lock:
            self._cache[token] = (user, exp)
            self._cache.move_to_end(token)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return user

    def _verify_uncached(self, token: str, now: float) -> tuple[User, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenInvalid("token is malformed (not a JWT)") from None
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise TokenInvalid(f"token uses algorithm {alg!r}; only {ALGORITHM} tokens signed by the cluster CA count")
        kid = header.get("kid")
        if kid is not None and kid != self.ca.fingerprint:
            raise TokenInvalid(f"token is not signed by this cluster's CA (it names CA {kid!r}, "
                               f"this cluster's is {self.ca.fingerprint})")
        try:
            # Time claims are checked below with our clock (PyJWT reads the wall
            # clock itself); everything else PyJWT checks, strictly.
            payload = jwt.decode(
                token, self.ca.public_key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                options={"require": ["exp", "iat", "sub"], "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False, "strict_aud": True},
            )
        except jwt.InvalidSignatureError:
            raise TokenInvalid("token is not signed by this cluster's CA") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenInvalid(f"token is malformed: it has no {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise TokenInvalid(f"token is not for this API (audience must be {AUDIENCE!r})") from None
        except jwt.InvalidIssuerError:
            raise TokenInvalid(f"token was not issued by hypercore (issuer must be {ISSUER!r})") from None
        except jwt.InvalidTokenError as exc:
            raise TokenInvalid(f"token is malformed: {exc}") from None
        exp, iat = _number(payload, "exp"), _number(payload, "iat")
        nbf = _number(payload, "nbf") if "nbf" in payload else iat
        if now - self.leeway >= exp:
            raise TokenInvalid("token expired; create a new one with: hypercore token create")
        if now + self.leeway < max(nbf, iat):
            raise TokenInvalid("token is not valid yet (check the clocks of this node and of the machine that made it)")
        name, mgmt = payload["sub"], payload.get("mgmt", False)
        if not isinstance(name, str) or not USER_NAME_RE.fullmatch(name):
            raise TokenInvalid(f"token is malformed: user name {name!r} is not allowed")
        if not isinstance(mgmt, bool):
            raise TokenInvalid("token is malformed: claim 'mgmt' is not true or false")
        return User(name=name, management=mgmt), exp
