"""Fixtures that run real ``serf agent`` processes on loopback.

Every agent a test starts is registered before it starts, and torn down with
SIGKILL (by the Process object we spawned, so by its own pid) even when the
test fails. Ports are picked by binding port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest_asyncio

from hypercore.devcluster import free_port
from hypercore.membership import SerfAgent

# No module-level skip for a missing serf: it would also hide the in-process
# tests here. Tests that run serf carry the `serf` marker (tests/conftest.py).


class AgentFactory(Protocol):
    def __call__(
        self,
        name: str,
        *,
        tags: Mapping[str, str] | None = None,
        start: bool = True,
        **kwargs: Any,
    ) -> Awaitable[SerfAgent]: ...


@pytest_asyncio.fixture
async def serf_agents(tmp_path: Path) -> AsyncIterator[AgentFactory]:
    """Factory fixture: ``agent = await serf_agents("n1", tags={...})``."""
    agents: list[SerfAgent] = []

    async def factory(
        name: str,
        *,
        tags: Mapping[str, str] | None = None,
        start: bool = True,
        **kwargs: Any,
    ) -> SerfAgent:
        kwargs.setdefault("profile", "local")
        kwargs.setdefault("log_level", "debug")
        kwargs.setdefault("stop_grace", 3.0)
        agent = SerfAgent(
            node_name=name,
            data_dir=tmp_path / name,
            bind=f"127.0.0.1:{free_port()}",
            rpc_addr=f"127.0.0.1:{free_port()}",
            tags=tags,
            **kwargs,
        )
        agents.append(agent)
        if start:
            await agent.start()
        return agent

    try:
        yield factory
    finally:
        for agent in agents:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(agent.kill(), timeout=10)
            # Only a pid that has not been reaped is certainly still ours.
            if agent.pid is not None and agent.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(agent.pid, signal.SIGKILL)
