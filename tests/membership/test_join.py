"""A slow join does not hold up reading members (issue 10: Serf RPC timeouts while 100 agents start).

Serf answers one request per RPC connection at a time, and `join` answers only when memberlist has done
its push-pull with each address in turn, each within its TCP timeout (10 s for `lan`). At 100 agents
starting on 2 cores the joins took seconds, and the agents' coordinate reads, which shared the join's
connection, timed out behind them (bench/scale.py counted 1 and 3). Real serf agents; the slow peer is a
listening socket that never accepts, so memberlist's push-pull waits out its timeout.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.membership.conftest import AgentFactory

pytestmark = pytest.mark.serf


async def test_member_and_coordinate_reads_do_not_wait_behind_a_slow_join(serf_agents: AgentFactory) -> None:
    agent = await serf_agents("j0", profile="lan")
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever answers
        join = asyncio.ensure_future(agent.join([f"127.0.0.1:{silent.getsockname()[1]}"]))
        try:
            await asyncio.sleep(0.3)  # the join is with serf, waiting for the silent peer
            assert not join.done()
            async with asyncio.timeout(2.0):
                members = await agent.rpc.members()
                coordinate = await agent.rpc.get_coordinate("j0", timeout=2.0)
            assert [m.name for m in members] == ["j0"]
            assert coordinate is not None
            assert not join.done()  # the reads answered while the join was still under way
        finally:
            join.cancel()
            await asyncio.gather(join, return_exceptions=True)
    finally:
        silent.close()
