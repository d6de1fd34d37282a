"""What the Serf RPC client hands out and raises, and how Serf's msgpack is decoded.

Serf's Go encoder writes strings in the old msgpack "raw" format, which is
also how it writes ``[]byte`` fields such as a member's IP address. The
client's decoder therefore keeps everything as bytes and the helpers here
convert each field to the Python type it stands for (addresses to IP
strings, names and tags to str, payloads stay bytes).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from hypercore.errors import HypercoreError

__all__ = [
    "DEFAULT_STREAM_BUFFER",
    "DEFAULT_TIMEOUT",
    "IPC_VERSION",
    "Coordinate",
    "Member",
    "SerfConnectionError",
    "SerfError",
    "SerfInvalidRequest",
    "SerfRPCError",
    "SerfStreamOverflow",
    "SerfTimeoutError",
    "decode_coordinate",
    "decode_event",
    "decode_ip",
    "decode_member",
    "MemberDecoder",
    "decode_str_map",
    "decode_text",
    "field",
    "is_header",
]

DEFAULT_TIMEOUT: Final[float] = 5.0
IPC_VERSION: Final[int] = 1
# A stream whose consumer falls this far behind is ended rather than allowed to
# grow without bound: the reader task must never block on one slow consumer,
# because that would also stall every other response on the connection.
DEFAULT_STREAM_BUFFER: Final[int] = 4096

_HEADER_KEYS: Final[frozenset[bytes]] = frozenset({b"Seq", b"Error"})


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class SerfError(HypercoreError):
    """Base class of every error raised while talking to a Serf agent."""


class SerfRPCError(SerfError):
    """Serf answered a request with a non-empty ``Error`` string."""

    def __init__(self, message: str, *, command: str | None = None) -> None:
        self.serf_message = message
        self.command = command
        prefix = f"serf {command}: " if command else "serf: "
        super().__init__(prefix + message.strip())


class SerfConnectionError(SerfError):
    """The agent cannot be reached, or the connection to it was lost."""


class SerfTimeoutError(SerfError, TimeoutError):
    """A request got no answer within its timeout (the connection stays usable)."""


class SerfInvalidRequest(SerfError, ValueError):
    """A request was refused locally because Serf would reject it."""


class SerfStreamOverflow(SerfError):
    """An event stream was ended because its consumer fell too far behind."""


# --------------------------------------------------------------------------
# Typed results
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """One member of the Serf cluster as the agent currently sees it."""

    name: str
    addr: str
    port: int
    tags: dict[str, str]
    status: str
    protocol_min: int = 0
    protocol_max: int = 0
    protocol_cur: int = 0
    delegate_min: int = 0
    delegate_max: int = 0
    delegate_cur: int = 0


@dataclass(frozen=True, slots=True)
class Coordinate:
    """A Vivaldi network coordinate (see Serf's ``coordinate`` package)."""

    vec: list[float]
    error: float
    adjustment: float
    height: float


# --------------------------------------------------------------------------
# Decoding helpers
# --------------------------------------------------------------------------


def decode_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if value is None:
        return ""
    return str(value)


def decode_ip(value: Any) -> str:
    """Turn Serf's raw ``net.IP`` bytes into the usual textual form."""
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        if len(raw) == 4:
            return str(ipaddress.IPv4Address(raw))
        if len(raw) == 16:
            addr = ipaddress.IPv6Address(raw)
            # Go keeps IPv4 addresses in 16-byte form internally, so an
            # IPv4-mapped address means "this is really an IPv4 node".
            return str(addr.ipv4_mapped or addr)
        if not raw:
            return ""
        return raw.decode("ascii", errors="replace")
    if isinstance(value, list):
        return decode_ip(bytes(value))
    return decode_text(value)


def decode_str_map(value: Any) -> dict[str, str]:
    if not value:
        return {}
    return {decode_text(k): decode_text(v) for k, v in value.items()}


def field(raw: Mapping[bytes, Any], key: str, default: Any = None) -> Any:
    """``raw[key]`` of a map as the client decodes it (its keys stay bytes)."""
    return raw.get(key.encode(), default)


def decode_member(raw: Mapping[bytes, Any]) -> Member:
    return Member(
        name=decode_text(field(raw, "Name")),
        addr=decode_ip(field(raw, "Addr", b"")),
        port=int(field(raw, "Port", 0)),
        tags=decode_str_map(field(raw, "Tags")),
        status=decode_text(field(raw, "Status")),
        protocol_min=int(field(raw, "ProtocolMin", 0)),
        protocol_max=int(field(raw, "ProtocolMax", 0)),
        protocol_cur=int(field(raw, "ProtocolCur", 0)),
        delegate_min=int(field(raw, "DelegateMin", 0)),
        delegate_max=int(field(raw, "DelegateMax", 0)),
        delegate_cur=int(field(raw, "DelegateCur", 0)),
    )


class MemberDecoder:
    """decode_member that gives back the Member it made last for a member whose record has not changed.

    Serf 0.8's coalescer re-sends every member ever updated in each member-update event
    (hashicorp/serf#555, open): at 100 nodes every event carries every member, nearly all as they were.
    Comparing a record with the last one (in C) costs a fraction of decoding it, and the cluster view then
    recognises the very same object.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._last: dict[bytes, tuple[Mapping[bytes, Any], Member]] = {}
        self._limit = limit

    def __call__(self, raw: Mapping[bytes, Any]) -> Member:
        name = field(raw, "Name")
        if not isinstance(name, bytes):
            return decode_member(raw)
        last = self._last.get(name)
        if last is not None and last[0] == raw:
            return last[1]
        member = decode_member(raw)
        if len(self._last) >= self._limit and name not in self._last:
            self._last.clear()  # a bound on what strangers can make it hold; a cluster has fewer members
        self._last[name] = (raw, member)
        return member


def _generic(value: Any) -> Any:
    """Best-effort decoding for records whose shape this module doesn't know."""
    if isinstance(value, dict):
        return {decode_text(k): _generic(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_generic(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return decode_text(value)
    return value


def decode_event(raw: Any, member: Callable[[Mapping[bytes, Any]], Member] = decode_member) -> dict[str, Any]:
    """Decode one stream record into a dict keyed like Serf's documentation (members with `member`)."""
    if not isinstance(raw, dict):
        return {"Event": "unknown", "Raw": raw}
    kind = decode_text(field(raw, "Event"))
    if kind.startswith("member-"):
        return {"Event": kind, "Members": [member(m) for m in field(raw, "Members") or []]}
    if kind in ("user", "query"):
        event: dict[str, Any] = {
            "Event": kind,
            "LTime": int(field(raw, "LTime", 0)),
            "Name": decode_text(field(raw, "Name")),
            # Payloads are opaque to Serf, so they stay bytes here too.
            "Payload": bytes(field(raw, "Payload") or b""),
        }
        if kind == "user":
            event["Coalesce"] = bool(field(raw, "Coalesce", False))
        else:
            event["ID"] = int(field(raw, "ID", 0))
        return event
    decoded: dict[str, Any] = _generic(raw)
    decoded.setdefault("Event", kind or "unknown")
    return decoded


def is_header(obj: Any) -> bool:
    # Bodies never consist of exactly these two keys, so this tells headers
    # from bodies without trusting our own idea of which replies carry a body.
    return isinstance(obj, dict) and len(obj) == 2 and _HEADER_KEYS.issuperset(obj)


def decode_coordinate(coord: Mapping[bytes, Any]) -> Coordinate:
    """A ``get-coordinate`` reply's ``Coord`` map as a Coordinate."""
    return Coordinate(
        vec=[float(v) for v in field(coord, "Vec") or []],
        error=float(field(coord, "Error", 0.0)),
        adjustment=float(field(coord, "Adjustment", 0.0)),
        height=float(field(coord, "Height", 0.0)),
    )
