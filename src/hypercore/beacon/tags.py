"""Beacon metrics in Serf tags: a compact, signed encoding and its strict verification.

Serf caps a member's encoded tags at 512 bytes, so the beacon is one short
comma-separated field plus a raw ECDSA P-256 key and signature in base64url
(hypercore.beacon.keys). The signature covers the node name too, so tags
copied onto another member do not verify.

  hc   protocol version ("2"; "1" until 2026-11-29, when request ids' holders came to be ranked by
       workload id: nodes of the two versions would disagree on every owner, so they do not see each other)
  api  HTTP API address, "host:port", or ":port" meaning the member's own address
  m    latency_ms,jitter_ms,packet_loss,queue_depth,price_per_gb,reputation,
       cpu_total,cpu_free,mem_total_mb,mem_free_mb,timestamp   (empty = unknown;
       timestamp: Unix seconds with up to 3 decimals)
  c    capabilities, comma-separated
  r    region (optional): a short ASCII name the operator gave the node (--region)
  k    public key (base64url, the 33-byte compressed P-256 point): the node's certified key
  a    admission: "<not_after>.<CA signature>[.<reputation>]" — the cluster CA's
       signature (64 bytes r‖s) over (member name, k, not_after[, reputation]),
       copied from the node's certificate (hypercore.identity); absent on a
       node run with --insecure
  sig  signature over the above by k (base64url, 64 bytes r‖s)

The signature proves that the member holds k; the admission proves that the
cluster CA certified k for this member name. Both are checked by readers:
the first here, the second by the cluster view, which holds the CA.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from hypercore.beacon import keys

# The beacon protocol's version: nodes of different versions do not admit each other. 2: holders ranked by the
# workload id (2026-11-29); 3: rendezvous weights from NumPy (2026-11-30); 4: request ids that name their home,
# held by the home's buddies (2026-11-30, thirteenth session): two rankings would send one request id to two
# owners, or refuse each other's claims (docs/placement-protocol.md, "Upgrading").
VERSION = "4"
SERF_TAGS_LIMIT = 512
REFRESH_S = 30.0  # the shortest beacon refresh without news (see refresh_period)
MAX_AGE_S = 3 * REFRESH_S + 10.0  # 100 s: stale_after(REFRESH_S), the limit in clusters of up to 11 nodes
# What the refresh may ask of each node's gossip, in alive messages sent per second. memberlist gossips
# to 3 nodes every 200 ms while it has anything to send, and Serf's idle CPU follows the share of rounds
# that carry something, not the bytes (100 plain Serf agents on `lan`: 0.16 % of a core each without
# updates, 0.22 % at 3 sends a second each, 0.35 % at 15, whatever the tags' size; docs/scale.md).
REFRESH_RELAYS_PER_NODE = 3.0
MAX_FUTURE_S = 30.0  # tolerated clock skew
BEACON_TAG_KEYS = ("hc", "api", "m", "c", "r", "k", "a", "sig")
# Used with fullmatch only (`$` would let a trailing newline through), ASCII only (`\d` is any Unicode digit).
_CAPABILITY = re.compile(r"[a-z][a-z0-9_-]{0,31}", re.ASCII)
# hypercore.config.REGION, the same pattern (--region is checked there; a beacon is checked here).
_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}", re.ASCII)
_TIMESTAMP = re.compile(r"[0-9]{1,12}(\.[0-9]{1,3})?", re.ASCII)
_API = re.compile(r"(\[[0-9a-fA-F:.]+\]|[0-9A-Za-z.-]*):([0-9]{1,5})", re.ASCII)

_FIELDS = (
    "latency_ms",
    "jitter_ms",
    "packet_loss",
    "queue_depth",
    "price_per_gb",
    "reputation",
    "cpu_total",
    "cpu_free",
    "mem_total_mb",
    "mem_free_mb",
)
# Upper bounds a sane beacon stays within; beyond them it is rejected as out of range.
_LIMITS = {
    "latency_ms": 3_600_000.0,
    "jitter_ms": 3_600_000.0,
    "packet_loss": 100.0,
    "queue_depth": 1e9,
    "price_per_gb": 1e6,
    "reputation": 1.0,
    "cpu_total": 1e6,
    "cpu_free": 1e6,
    "mem_total_mb": 1e12,
    "mem_free_mb": 1e12,
}


class BeaconInvalid(Exception):
    """A member's tags carry no usable beacon; `cause` is a short metric label. `until`: when the same tags
    may pass (a timestamp too far in the future passes once the clock comes near it), None: never."""

    def __init__(self, cause: str, detail: str, until: float | None = None) -> None:
        self.cause = cause
        self.until = until
        super().__init__(detail)


@dataclass(frozen=True)
class Admission:
    """The cluster CA's signature certifying a node key for a member name until `not_after`,
    and the prior reputation it attested, if any."""

    not_after: int
    signature: bytes
    reputation: float | None = None

    def encode(self) -> str:
        text = f"{self.not_after}.{_b64(self.signature)}"
        return text if self.reputation is None else f"{text}.{self.reputation:.3f}".rstrip("0").rstrip(".")

    @classmethod
    def decode(cls, text: str) -> "Admission":
        parts = text.split(".", 3)
        if len(parts) == 4 and parts[2].isascii() and parts[2].isdigit():
            parts = [parts[0], parts[1], f"{parts[2]}.{parts[3]}"]  # "<not_after>.<sig>.<0.xyz>"
        if len(parts) not in (2, 3):
            raise BeaconInvalid("malformed", "admission tag is not '<not_after>.<signature>[.<reputation>]'")
        not_after, sig = parts[0], parts[1]
        if not not_after.isascii() or not not_after.isdigit() or len(not_after) > 12:
            raise BeaconInvalid("malformed", "admission tag is not '<not_after>.<signature>[.<reputation>]'")
        try:
            raw = _unb64(sig)
        except ValueError:
            raise BeaconInvalid("malformed", "admission signature is not base64url") from None
        if len(raw) != keys.SIGNATURE_BYTES:
            raise BeaconInvalid("malformed", f"admission signature is not {keys.SIGNATURE_BYTES} bytes")
        reputation = None
        if len(parts) == 3:
            if not re.fullmatch(r"[01](\.[0-9]{1,3})?", parts[2], re.ASCII) or float(parts[2]) > 1:
                raise BeaconInvalid("malformed", f"attested reputation {parts[2][:20]!r} is not a number in 0..1")
            reputation = float(parts[2])
        return cls(int(not_after), raw, reputation)


@dataclass(frozen=True)
class Beacon:
    """What a node publishes about itself. None means not measured (yet)."""

    api: str
    # When the node measured it, by its own clock, to the millisecond (its publisher compares it with when its
    # workloads were accepted: hypercore.beacon.publisher, "came and went").
    timestamp: float
    latency_ms: float | None = None
    jitter_ms: float | None = None
    packet_loss: float | None = None
    queue_depth: float | None = None
    price_per_gb: float | None = None
    reputation: float | None = None
    cpu_total: float | None = None
    cpu_free: float | None = None
    mem_total_mb: float | None = None
    mem_free_mb: float | None = None
    capabilities: tuple[str, ...] = field(default_factory=tuple)
    region: str | None = None
    beacon_id: str = ""
    # Identity, not metrics: the signing key and the CA's admission of it.
    public_key: bytes = field(default=b"", repr=False)
    admission: Admission | None = field(default=None, repr=False)

    def metrics(self) -> dict[str, Any]:
        out = asdict(self)
        out["capabilities"] = list(self.capabilities)
        for key in ("public_key", "admission"):
            out.pop(key)
        return out


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _message(node: str, api: str, m: str, c: str, a: str, r: str | None) -> bytes:
    parts = [b"hypercore-beacon-v" + VERSION.encode(), node.encode(), api.encode(), m.encode(), c.encode(), a.encode()]
    # A region is one more part, only when there is one: beacons without it sign what they always signed,
    # and neither adding nor removing the tag leaves a signature valid.
    if r is not None:
        parts.append(b"r=" + r.encode())
    return b"\0".join(parts)


def encode(beacon: Beacon, node: str, key: ec.EllipticCurvePrivateKey,
           admission: Admission | None = None) -> dict[str, str]:
    """Tags for `beacon`, signed by `key` for member `node`, carrying the CA's `admission` of that key."""
    m = ",".join([*(_num(getattr(beacon, f)) for f in _FIELDS), _timestamp(beacon.timestamp)])
    c = ",".join(sorted(beacon.capabilities))
    a = admission.encode() if admission is not None else ""
    signature = keys.sign(key, _message(node, beacon.api, m, c, a, beacon.region))
    tags = {"hc": VERSION, "api": beacon.api, "m": m, "c": c, "k": _b64(keys.public_bytes(key)), "sig": _b64(signature)}
    if a:
        tags["a"] = a
    if beacon.region is not None:
        tags["r"] = beacon.region
    return tags


def _timestamp(value: float) -> str:
    """Milliseconds at most, without trailing zeros: "1764387812.345", "1764387812.3", "1764387812"."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def encoded_size(tags: dict[str, str]) -> int:
    """Bytes Serf needs for these tags (it msgpack-encodes the map)."""
    return len(msgpack.packb(tags, use_bin_type=False))


def retransmits(members: int) -> int:
    """How many times each node relays a member's update (memberlist: RetransmitMult 4 × ⌈log10(N+1)⌉)."""
    return 4 * max(1, math.ceil(math.log10(members + 1)))


def refresh_period(members: int) -> float:
    """Seconds between two publications of an unchanged beacon in a cluster of `members` nodes.

    Every node relays every update retransmits(N) times, so a refresh every P seconds asks each node for
    N / P × retransmits(N) sends a second, whatever the node does. A fixed 30 s asked 40 a second of each
    node at 100 nodes (more than memberlist sends) and 530 at 1,000; the period grows with N so that it
    stays at REFRESH_RELAYS_PER_NODE: 30 s up to 11 nodes, 400 s at 100, 89 min at 1,000, 18.5 h at
    10,000. News (free-capacity levels, price, capabilities) is published at once whatever the period.
    """
    return max(REFRESH_S, members * retransmits(members) / REFRESH_RELAYS_PER_NODE)


def stale_after(refresh: float) -> float:
    """A beacon older than this is stale: three refresh periods (two publications may be lost) and 10 s."""
    return 3 * refresh + 10.0


def max_age(members: int) -> float:
    return stale_after(refresh_period(members))


def decode(tags: dict[str, str], node: str, now: float, max_age_s: float = MAX_AGE_S) -> Beacon:
    """Verify and parse a member's beacon tags, or raise BeaconInvalid(cause)."""
    if "sig" not in tags and "m" not in tags:
        raise BeaconInvalid("missing", "no beacon tags")
    if tags.get("hc") != VERSION:
        raise BeaconInvalid("version", f"beacon version {tags.get('hc')!r}, this node reads {VERSION!r}")
    try:
        api, m, c, k, sig = (tags[key] for key in ("api", "m", "c", "k", "sig"))
    except KeyError as exc:
        raise BeaconInvalid("malformed", f"tag {exc.args[0]!r} missing") from None
    if encoded_size(tags) > SERF_TAGS_LIMIT:
        raise BeaconInvalid("oversized", f"tags take {encoded_size(tags)} bytes, over Serf's {SERF_TAGS_LIMIT}")
    try:
        raw_key, raw_sig = _unb64(k), _unb64(sig)
        keys.verify(raw_key, raw_sig, _message(node, api, m, c, tags.get("a", ""), tags.get("r")))
    except (ValueError, InvalidSignature, TypeError):
        raise BeaconInvalid("signature", "beacon signature does not verify") from None
    api_match = _API.fullmatch(api)
    if api_match is None or not 1 <= int(api_match.group(2)) <= 65535:
        raise BeaconInvalid("malformed", f"api address {api!r} is not host:port")
    parts = m.split(",")
    if len(parts) != len(_FIELDS) + 1:
        raise BeaconInvalid("malformed", f"metrics field has {len(parts)} values, expected {len(_FIELDS) + 1}")
    values: dict[str, float | None] = {}
    for name, text in zip(_FIELDS, parts):
        if text == "":
            values[name] = None
            continue
        try:
            value = float(text)
        except ValueError:
            raise BeaconInvalid("malformed", f"{name} {text!r} is not a number") from None
        if not math.isfinite(value) or value < 0 or value > _LIMITS[name]:
            raise BeaconInvalid("range", f"{name} {text} is out of range 0..{_LIMITS[name]:g}")
        values[name] = value
    if not _TIMESTAMP.fullmatch(parts[-1]):
        raise BeaconInvalid("malformed", f"timestamp {parts[-1]!r} is not Unix seconds (up to 3 decimals)")
    ts = float(parts[-1])
    if ts < now - max_age_s:
        raise BeaconInvalid("stale", f"beacon is {now - ts:.0f} s old (max {max_age_s:.0f} s)")
    if ts > now + MAX_FUTURE_S:
        raise BeaconInvalid("future", f"beacon timestamp is {ts - now:.0f} s in the future", until=ts - MAX_FUTURE_S)
    caps = tuple(x for x in c.split(",") if x)
    if any(not _CAPABILITY.fullmatch(x) for x in caps):
        raise BeaconInvalid("malformed", f"capabilities {c!r} are not all names")
    region = tags.get("r")
    if region is not None and not _REGION.fullmatch(region):
        raise BeaconInvalid("malformed", f"region {region[:40]!r} is not a region name")
    admission = Admission.decode(tags["a"]) if tags.get("a") else None
    return Beacon(api=api, timestamp=ts, capabilities=caps, region=region, beacon_id=keys.fingerprint(raw_key), public_key=raw_key,
                  admission=admission, **values)
