"""Publishing tags does not hold up reading members (issue 10: Serf RPC timeouts while idle).

Serf answers one request per RPC connection at a time, and `tags` answers only once memberlist has
gossiped the update (0.3–0.4 s on 3 idle `lan` agents here, up to Serf's 5 s broadcast timeout when gossip
is busy). On one shared connection every member and coordinate read waited behind it; at 100 nodes
those reads timed out. Real serf agents.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.membership.conftest import AgentFactory

pytestmark = pytest.mark.serf


async def test_a_member_read_does_not_wait_behind_a_tags_publication(serf_agents: AgentFactory) -> None:
    agents = [await serf_agents(f"p{i}", profile="lan") for i in range(3)]
    for agent in agents[1:]:
        await agent.rpc.join([agents[0].bind])
    for _ in range(100):
        if len(await agents[0].rpc.members()) == 3:
            break
        await asyncio.sleep(0.1)
    await agents[0].publish_tags({"warm": "up"})  # its connection is open from now on
    done: list[str] = []

    async def publish() -> None:
        await agents[0].publish_tags({"x": "1"})
        done.append("tags")

    task = asyncio.ensure_future(publish())
    await asyncio.sleep(0.02)  # the tags request is with serf
    assert len(await agents[0].rpc.members()) == 3
    done.append("members")
    await task
    assert done == ["members", "tags"]
    me = next(m for m in await agents[0].rpc.members() if m.name == "p0")
    assert me.tags.get("x") == "1"
