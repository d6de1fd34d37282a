"""Cluster membership through HashiCorp Serf.

:class:`SerfAgent` runs and supervises a real ``serf agent`` process;
:class:`SerfRPC` is the asyncio client for its RPC port.
"""

from hypercore.membership.agent import (
    SerfAgent,
    SerfAgentError,
    SerfConfigError,
    SerfNotInstalled,
    find_serf_binary,
)
from hypercore.membership.rpc import (
    DEFAULT_TIMEOUT,
    Coordinate,
    EventStream,
    Member,
    SerfConnectionError,
    SerfError,
    SerfInvalidRequest,
    SerfRPC,
    SerfRPCError,
    SerfStreamOverflow,
    SerfTimeoutError,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "Coordinate",
    "EventStream",
    "Member",
    "SerfAgent",
    "SerfAgentError",
    "SerfConfigError",
    "SerfConnectionError",
    "SerfError",
    "SerfInvalidRequest",
    "SerfNotInstalled",
    "SerfRPC",
    "SerfRPCError",
    "SerfStreamOverflow",
    "SerfTimeoutError",
    "find_serf_binary",
]
