"""Serf runs with GOMAXPROCS=1 unless the operator sets it (issue 10: idle CPU per node at 100 nodes).

With Go's default, one thread per core, 40 idle Serfs on 2 cores switched context 127 times a second each;
with one, 91 (bench/README.md). Real serf agents: what is checked is the environment the process got.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.membership.conftest import AgentFactory

pytestmark = pytest.mark.serf


def environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


async def test_serf_runs_its_go_code_on_one_thread(serf_agents: AgentFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    agent = await serf_agents("g0")
    assert agent.pid is not None
    assert environment(agent.pid).get("GOMAXPROCS") == "1"


async def test_the_operators_gomaxprocs_wins(serf_agents: AgentFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOMAXPROCS", "2")
    agent = await serf_agents("g1")
    assert agent.pid is not None
    assert environment(agent.pid).get("GOMAXPROCS") == "2"
    assert os.environ["GOMAXPROCS"] == "2"  # the agent's own environment is left as it was
