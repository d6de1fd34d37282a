"""One ``stream`` subscription on a Serf RPC connection, as an async iterator.

The connection's reader task (in :class:`~hypercore.membership.rpc.SerfRPC`)
hands every record tagged with the subscription's ``Seq`` to its
:class:`EventStream`; the stream buffers them, bounded, for its consumer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any

from hypercore.membership.rpc_types import (
    DEFAULT_TIMEOUT,
    SerfConnectionError,
    SerfRPCError,
    SerfStreamOverflow,
    SerfTimeoutError,
    decode_event,
)

if TYPE_CHECKING:
    from hypercore.membership.rpc import SerfRPC

__all__ = ["EventStream"]

log = logging.getLogger(__name__)


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
            event = decode_event(raw, self._client.decode_member)
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
