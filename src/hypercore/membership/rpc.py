"""An asyncio client for the Serf agent's RPC protocol.

Serf speaks msgpack over TCP. Every request is a header map
``{"Command", "Seq"}`` optionally followed by a body map; every response is a
header map ``{"Seq", "Error"}`` optionally followed by a body. Responses are
matched to requests by ``Seq`` only, and event streams keep sending records
tagged with the ``Seq`` of the ``stream`` request that opened them, so one
reader task owns the socket and hands every message to whoever waits for its
``Seq``.

Serf's Go encoder writes strings in the old msgpack "raw" format, which is
also how it writes ``[]byte`` fields such as a member's IP address. The
decoder therefore keeps everything as bytes and this module converts each
field to the Python type it stands for (addresses to IP strings, names and
tags to str, payloads stay bytes).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import itertools
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import msgpack

from hypercore.errors import HypercoreError

__all__ = [
    "DEFAULT_TIMEOUT",
    "Coordinate",
    "EventStream",
    "Member",
    "SerfConnectionError",
    "SerfError",
    "SerfInvalidRequest",
    "SerfRPC",
    "SerfRPCError",
    "SerfStreamOverflow",
    "SerfTimeoutError",
]

log = logging.getLogger(__name__)

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


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if value is None:
        return ""
    return str(value)


def _ip(value: Any) -> str:
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
        return _ip(bytes(value))
    return _text(value)


def _str_map(value: Any) -> dict[str, str]:
    if not value:
        return {}
    return {_text(k): _text(v) for k, v in value.items()}


def _get(raw: Mapping[bytes, Any], key: str, default: Any = None) -> Any:
    return raw.get(key.encode(), default)


def _member(raw: Mapping[bytes, Any]) -> Member:
    return Member(
        name=_text(_get(raw, "Name")),
        addr=_ip(_get(raw, "Addr", b"")),
        port=int(_get(raw, "Port", 0)),
        tags=_str_map(_get(raw, "Tags")),
        status=_text(_get(raw, "Status")),
        protocol_min=int(_get(raw, "ProtocolMin", 0)),
        protocol_max=int(_get(raw, "ProtocolMax", 0)),
        protocol_cur=int(_get(raw, "ProtocolCur", 0)),
        delegate_min=int(_get(raw, "DelegateMin", 0)),
        delegate_max=int(_get(raw, "DelegateMax", 0)),
        delegate_cur=int(_get(raw, "DelegateCur", 0)),
    )


def _generic(value: Any) -> Any:
    """Best-effort decoding for records whose shape this module doesn't know."""
    if isinstance(value, dict):
        return {_text(k): _generic(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_generic(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return _text(value)
    return value


def _event(raw: Any) -> dict[str, Any]:
    """Decode one stream record into a dict keyed like Serf's documentation."""
    if not isinstance(raw, dict):
        return {"Event": "unknown", "Raw": raw}
    kind = _text(_get(raw, "Event"))
    if kind.startswith("member-"):
        return {"Event": kind, "Members": [_member(m) for m in _get(raw, "Members") or []]}
    if kind in ("user", "query"):
        event: dict[str, Any] = {
            "Event": kind,
            "LTime": int(_get(raw, "LTime", 0)),
            "Name": _text(_get(raw, "Name")),
            # Payloads are opaque to Serf, so they stay bytes here too.
            "Payload": bytes(_get(raw, "Payload") or b""),
        }
        if kind == "user":
            event["Coalesce"] = bool(_get(raw, "Coalesce", False))
        else:
            event["ID"] = int(_get(raw, "ID", 0))
        return event
    decoded: dict[str, Any] = _generic(raw)
    decoded.setdefault("Event", kind or "unknown")
    return decoded


def _is_header(obj: Any) -> bool:
    # Bodies never consist of exactly these two keys, so this tells headers
    # from bodies without trusting our own idea of which replies carry a body.
    return isinstance(obj, dict) and len(obj) == 2 and _HEADER_KEYS.issuperset(obj)


# Go's RE2 syntax that Python's ``re`` rejects; patterns using it skip the
# local pre-check and are left to Serf.
_GO_ONLY_SYNTAX = re.compile(r"\\[pPzQC]")


def _check_regex(what: str, pattern: str) -> None:
    """Refuse patterns Serf could not compile.

    An invalid regex in ``members-filtered`` makes Serf drop the whole
    connection (every in-flight request and stream would fail), so a bad
    pattern is refused here while it is still cheap.
    """
    if _GO_ONLY_SYNTAX.search(pattern):
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        raise SerfInvalidRequest(f"invalid regular expression for {what} {pattern!r}: {exc}") from exc


# --------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    command: str
    future: asyncio.Future[Any]
    expects_body: bool


class EventStream:
    """Events from one ``stream`` subscription, as an async iterator of dicts.

    Member events look like ``{"Event": "member-join", "Members": [Member, ...]}``;
    user events like ``{"Event": "user", "LTime": 3, "Name": "deploy",
    "Payload": b"...", "Coalesce": True}``. Iteration ends after :meth:`stop`
    or :meth:`SerfRPC.close`, and raises :class:`SerfConnectionError` if the
    connection is lost (after the events already received are consumed).
    """

    def __init__(self, client: SerfRPC, seq: int, event_types: str, max_buffer: int) -> None:
        self._client = client
        self.seq = seq
        self.event_types = event_types
        self._max_buffer = max_buffer
        self._events: collections.deque[dict[str, Any]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finished = False
        self._error: BaseException | None = None
        self._stopping = False

    # -- called by the client's reader task ---------------------------------

    @property
    def _is_acked(self) -> bool:
        return self._acked.done()

    def _ack(self, error: str) -> None:
        if self._acked.done():
            return
        if error:
            self._acked.set_exception(SerfRPCError(error, command="stream"))
        else:
            self._acked.set_result(None)

    def _push(self, raw: Any) -> None:
        if self._finished:
            return
        if len(self._events) >= self._max_buffer:
            self._client._forget(self.seq)
            self._client._stop_in_background(self.seq)
            self._finish(
                SerfStreamOverflow(
                    f"event stream {self.event_types!r} overflowed ({self._max_buffer} unread events); "
                    "re-read the member list and open a new stream"
                )
            )
            return
        try:
            event = _event(raw)
        except Exception as exc:  # a malformed record must not kill the reader task
            log.warning("serf: undecodable stream record %r: %s", raw, exc)
            event = {"Event": "unknown", "Raw": raw}
        self._events.append(event)
        self._wakeup.set()

    def _finish(self, error: BaseException | None) -> None:
        if not self._acked.done():
            self._acked.set_exception(error or SerfConnectionError("stream closed before Serf answered"))
            # Nobody may be awaiting the ack any more; don't warn about it.
            self._acked.exception()
        if self._finished:
            return
        self._finished = True
        self._error = error
        self._wakeup.set()

    # -- public API ---------------------------------------------------------

    @property
    def active(self) -> bool:
        """True while events can still arrive."""
        return not self._finished

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while True:
            if self._events:
                return self._events.popleft()
            if self._finished:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    async def next(self, timeout: float | None = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Return the next event, raising :class:`SerfTimeoutError` after *timeout*."""
        try:
            async with asyncio.timeout(timeout):
                return await self.__anext__()
        except TimeoutError as exc:
            if isinstance(exc, SerfTimeoutError):
                raise
            raise SerfTimeoutError(f"no event on stream {self.event_types!r} within {timeout}s") from None

    async def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Unsubscribe. Events already received can still be iterated."""
        if self._stopping:
            return
        self._stopping = True
        # Forget the Seq first so events already in flight are discarded
        # instead of being delivered after the caller asked to stop.
        self._client._forget(self.seq)
        self._finish(None)
        if not self._client.closed:
            with contextlib.suppress(SerfConnectionError):
                await self._client._request("stop", {"Stop": self.seq}, expects_body=False, timeout=timeout)

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class SerfRPC:
    """A connection to one Serf agent's RPC port.

    Create it with :meth:`connect`. All methods may be called concurrently;
    each takes a ``timeout`` in seconds (default 5) and raises
    :class:`SerfTimeoutError` when it expires, :class:`SerfRPCError` when Serf
    reports an error and :class:`SerfConnectionError` when the connection is
    gone (every pending request fails with it as soon as the loss is seen).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, address: str) -> None:
        self._reader = reader
        self._writer = writer
        self.address = address
        self._seq = itertools.count()
        self._pending: dict[int, _Call | EventStream] = {}
        # Seq of the request/stream whose body is the next message, if any.
        self._body_target: int | None = None
        self._drain_lock = asyncio.Lock()
        self._closed = False
        self._close_reason: SerfConnectionError | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._read_task = asyncio.create_task(self._read_loop(), name=f"serf-rpc-reader {address}")

    # -- connection lifecycle -------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        auth_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> SerfRPC:
        """Open a connection, perform the version handshake and, if *auth_key* is given, authenticate."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            raise SerfConnectionError(f"cannot connect to serf RPC at {address}: timed out after {timeout}s") from None
        except OSError as exc:
            raise SerfConnectionError(f"cannot connect to serf RPC at {address}: {exc}") from exc
        client = cls(reader, writer, address=address)
        try:
            await client._request("handshake", {"Version": IPC_VERSION}, expects_body=False, timeout=timeout)
            if auth_key:
                await client._request("auth", {"AuthKey": auth_key}, expects_body=False, timeout=timeout)
        except BaseException:
            await client.close()
            raise
        return client

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Close the connection; pending requests fail, open streams simply end."""
        self._shutdown(SerfConnectionError(f"serf RPC client for {self.address} was closed"), streams_fail=False)
        if self._read_task is not asyncio.current_task():
            self._read_task.cancel()
            # wait() rather than await: the task's own CancelledError is
            # expected, while a cancellation of close() itself must propagate.
            await asyncio.wait([self._read_task])
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> SerfRPC:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _shutdown(self, reason: SerfConnectionError, *, streams_fail: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if isinstance(entry, EventStream):
                entry._finish(reason if streams_fail else None)
            elif not entry.future.done():
                entry.future.set_exception(reason)
        self._writer.close()

    async def _read_loop(self) -> None:
        unpacker = msgpack.Unpacker(raw=True)
        reason = SerfConnectionError(f"serf agent at {self.address} closed the connection")
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                unpacker.feed(data)
                for obj in unpacker:
                    self._dispatch(obj)
        except asyncio.CancelledError:
            raise
        except (OSError, asyncio.IncompleteReadError) as exc:
            reason = SerfConnectionError(f"connection to serf agent at {self.address} lost: {exc}")
        except Exception as exc:  # undecodable data: the stream can't be resynchronised
            log.exception("serf: protocol error on %s", self.address)
            reason = SerfConnectionError(f"protocol error on connection to serf agent at {self.address}: {exc}")
        finally:
            self._shutdown(reason, streams_fail=True)

    def _dispatch(self, obj: Any) -> None:
        if _is_header(obj):
            self._body_target = None
            seq = obj[b"Seq"]
            error = _text(obj[b"Error"])
            entry = self._pending.get(seq)
            if entry is None:
                # A late answer to a request that timed out, or an event for a
                # stopped stream; a body following it is dropped below.
                log.debug("serf: discarding message for unknown seq %s", seq)
                return
            if isinstance(entry, EventStream):
                if not entry._is_acked:
                    entry._ack(error)
                    if error:
                        self._pending.pop(seq, None)
                else:
                    self._body_target = seq
                return
            if error:
                # Some failed commands (join) still send a body; it gets dropped.
                self._pending.pop(seq, None)
                if not entry.future.done():
                    entry.future.set_exception(SerfRPCError(error, command=entry.command))
            elif entry.expects_body:
                self._body_target = seq
            else:
                self._pending.pop(seq, None)
                if not entry.future.done():
                    entry.future.set_result(None)
            return

        seq, self._body_target = self._body_target, None
        if seq is None:
            log.debug("serf: discarding unexpected body")
            return
        entry = self._pending.get(seq)
        if isinstance(entry, EventStream):
            entry._push(obj)
        elif entry is not None:
            self._pending.pop(seq, None)
            if not entry.future.done():
                entry.future.set_result(obj)

    def _forget(self, seq: int) -> None:
        self._pending.pop(seq, None)

    def _stop_in_background(self, seq: int) -> None:
        async def stop() -> None:
            try:
                await self._request("stop", {"Stop": seq}, expects_body=False, timeout=DEFAULT_TIMEOUT)
            except SerfError as exc:
                log.debug("serf: background stop of stream %s failed: %s", seq, exc)

        task = asyncio.create_task(stop())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _ensure_open(self) -> None:
        if self._closed:
            raise self._close_reason or SerfConnectionError(f"serf RPC client for {self.address} is closed")

    async def _send(self, command: str, seq: int, body: Mapping[str, Any] | None) -> None:
        payload = msgpack.packb({"Command": command, "Seq": seq}, use_bin_type=True)
        if body is not None:
            payload += msgpack.packb(body, use_bin_type=True)
        # One write() per request keeps header and body of concurrent
        # requests from interleaving on the socket.
        self._writer.write(payload)
        try:
            async with self._drain_lock:
                await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            self._ensure_open()
            raise SerfConnectionError(f"cannot send to serf agent at {self.address}: {exc}") from exc

    async def _request(
        self,
        command: str,
        body: Mapping[str, Any] | None = None,
        *,
        expects_body: bool,
        timeout: float,
    ) -> Any:
        self._ensure_open()
        seq = next(self._seq)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[seq] = _Call(command, future, expects_body)
        try:
            async with asyncio.timeout(timeout):
                await self._send(command, seq, body)
                return await future
        except TimeoutError:
            raise SerfTimeoutError(f"serf {command}: no answer from {self.address} within {timeout}s") from None
        finally:
            # On timeout or cancellation the answer may still arrive; with the
            # Seq forgotten the reader drops it instead of misrouting it.
            self._pending.pop(seq, None)
            if future.done() and not future.cancelled():
                future.exception()  # mark retrieved: no "never retrieved" warnings

    # -- commands -------------------------------------------------------------

    async def members(self, *, timeout: float = DEFAULT_TIMEOUT) -> list[Member]:
        """All members the agent knows, whatever their status."""
        body = await self._request("members", expects_body=True, timeout=timeout)
        return [_member(m) for m in _get(body, "Members") or []]

    async def members_filtered(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[Member]:
        """Members matching every given filter.

        Each filter is a Go regular expression that Serf anchors with ``^…$``;
        an omitted filter matches everything.
        """
        for what, pattern in (("status", status), ("name", name)):
            if pattern:
                _check_regex(what, pattern)
        for key, pattern in (tags or {}).items():
            _check_regex(f"tag {key!r}", pattern)
        body = await self._request(
            "members-filtered",
            {"Tags": dict(tags or {}), "Status": status or "", "Name": name or ""},
            expects_body=True,
            timeout=timeout,
        )
        return [_member(m) for m in _get(body, "Members") or []]

    async def join(
        self,
        addrs: str | Iterable[str],
        replay: bool = False,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> int:
        """Ask the agent to join the cluster through *addrs* (``host:port``); returns how many answered."""
        existing = [addrs] if isinstance(addrs, str) else list(addrs)
        if not existing:
            raise SerfInvalidRequest("join needs at least one address")
        body = await self._request("join", {"Existing": existing, "Replay": replay}, expects_body=True, timeout=timeout)
        return int(_get(body, "Num", 0))

    async def leave(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Gracefully leave the cluster. The agent then shuts down, so this client is closed too."""
        try:
            await self._request("leave", expects_body=False, timeout=timeout)
        finally:
            if not self._closed:
                await self.close()

    async def force_leave(self, node: str, *, prune: bool = False, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Mark a failed node as left (``prune`` also removes it from the member list at once)."""
        await self._request("force-leave", {"Node": node, "Prune": prune}, expects_body=False, timeout=timeout)

    async def tags(
        self,
        set: Mapping[str, str] | None = None,  # noqa: A002 - mirrors Serf's "tags -set"
        delete: Sequence[str] = (),
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Add/replace the tags in *set* and remove the keys in *delete* on this agent.

        Serf refuses (``SerfRPCError``) tag sets whose encoding exceeds 512 bytes
        in total, and then keeps the previous tags.
        """
        new_tags = {str(k): str(v) for k, v in (set or {}).items()}
        if isinstance(delete, str):
            raise SerfInvalidRequest("delete must be a sequence of tag names, not a string")
        await self._request("tags", {"Tags": new_tags, "DeleteTags": list(delete)}, expects_body=False, timeout=timeout)

    async def user_event(
        self,
        name: str,
        payload: bytes = b"",
        *,
        coalesce: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Broadcast a custom user event to the cluster."""
        await self._request(
            "event",
            {"Name": name, "Payload": bytes(payload), "Coalesce": coalesce},
            expects_body=False,
            timeout=timeout,
        )

    async def stats(self, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, dict[str, str]]:
        """Agent debugging information, e.g. ``stats()["agent"]["name"]``."""
        body = await self._request("stats", expects_body=True, timeout=timeout)
        return {_text(section): _str_map(values) for section, values in (body or {}).items()}

    async def get_coordinate(self, node: str, *, timeout: float = DEFAULT_TIMEOUT) -> Coordinate | None:
        """The cached network coordinate of *node*, or None if the agent has none."""
        body = await self._request("get-coordinate", {"Node": node}, expects_body=True, timeout=timeout)
        if not _get(body, "Ok", False):
            return None
        coord = _get(body, "Coord") or {}
        return Coordinate(
            vec=[float(v) for v in _get(coord, "Vec") or []],
            error=float(_get(coord, "Error", 0.0)),
            adjustment=float(_get(coord, "Adjustment", 0.0)),
            height=float(_get(coord, "Height", 0.0)),
        )

    async def stream(
        self,
        event_types: str = "*",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_buffer: int = DEFAULT_STREAM_BUFFER,
    ) -> EventStream:
        """Subscribe to events, e.g. ``"member-join,member-failed,user:deploy"`` or ``"*"``.

        Returns once Serf has accepted the filter; iterate the result for
        events and call :meth:`EventStream.stop` to unsubscribe.
        """
        self._ensure_open()
        seq = next(self._seq)
        stream = EventStream(self, seq, event_types, max_buffer)
        self._pending[seq] = stream
        try:
            async with asyncio.timeout(timeout):
                await self._send("stream", seq, {"Type": event_types})
                await stream._acked
        except TimeoutError:
            self._forget(seq)
            stream._finish(None)
            raise SerfTimeoutError(f"serf stream: no answer from {self.address} within {timeout}s") from None
        except BaseException:
            self._forget(seq)
            stream._finish(None)
            raise
        return stream
