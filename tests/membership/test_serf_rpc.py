"""SerfRPC and SerfAgent against the real serf binary (loopback only).

A few protocol edge cases (a connection dropped with requests in flight, late
answers after a timeout) can't be provoked reliably from a real agent; those
use a tiny scripted server speaking the same msgpack framing.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import pytest
import pytest_asyncio

from hypercore.errors import HypercoreError
from hypercore.membership import (
    EventStream,
    Member,
    SerfAgent,
    SerfAgentError,
    SerfConfigError,
    SerfConnectionError,
    SerfError,
    SerfInvalidRequest,
    SerfNotInstalled,
    SerfRPC,
    SerfRPCError,
    SerfTimeoutError,
)

pytestmark = [pytest.mark.cluster, pytest.mark.serf, pytest.mark.timeout(60)]

AgentFactory = Callable[..., Awaitable[SerfAgent]]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> float:
    """Poll *check* until it returns True; returns how many seconds it took."""
    start = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def next_event(stream: EventStream, event: str, member: str | None = None, *, timeout: float) -> dict[str, Any]:
    """The next *event* record (about *member*, if given), skipping unrelated ones."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            record = await stream.next(timeout=max(deadline - time.monotonic(), 0.001))
        except SerfTimeoutError:
            raise AssertionError(f"no {event} event for {member} within {timeout}s") from None
        if record["Event"] == event and (member is None or member in {m.name for m in record.get("Members", [])}):
            return record


def by_name(members: list[Member]) -> dict[str, Member]:
    return {m.name: m for m in members}


async def sees(observer: SerfAgent, name: str, predicate: Callable[[Member], bool]) -> bool:
    member = by_name(await observer.rpc.members()).get(name)
    return member is not None and predicate(member)


TAGS = {
    "n0": {"role": "gpu", "zone": "a"},
    "n1": {"role": "cpu", "zone": "a"},
    "n2": {"role": "gpu", "zone": "b"},
}


@pytest_asyncio.fixture
async def cluster3(serf_agents: AgentFactory) -> list[SerfAgent]:
    """n0, n1, n2 joined through n0; every agent sees all three alive."""
    agents = list(await asyncio.gather(*(serf_agents(name, tags=tags) for name, tags in TAGS.items())))
    n0, n1, n2 = agents
    assert await n1.rpc.join([n0.bind]) == 1
    assert await n2.rpc.join([n0.bind, n1.bind]) == 2

    async def all_alive(agent: SerfAgent) -> bool:
        members = await agent.rpc.members()
        return len(members) == 3 and all(m.status == "alive" for m in members)

    for agent in agents:
        await wait_until(lambda a=agent: all_alive(a), timeout=10, what=f"{agent.node_name} to see 3 alive members")
    return agents


# --------------------------------------------------------------------------
# handshake and auth
# --------------------------------------------------------------------------


async def test_handshake_and_auth(serf_agents: AgentFactory) -> None:
    agent = await serf_agents("solo", rpc_auth_key="correct-horse")
    host, port = agent.rpc_host, agent.rpc_port

    async with await SerfRPC.connect(host, port, "correct-horse") as rpc:
        assert (await rpc.stats())["agent"]["name"] == "solo"

    with pytest.raises(SerfRPCError, match="Invalid authentication token"):
        await SerfRPC.connect(host, port, "wrong-key")

    # Handshake alone succeeds, but Serf refuses every command until auth.
    async with await SerfRPC.connect(host, port, None) as rpc:
        with pytest.raises(SerfRPCError, match="Authentication required"):
            await rpc.members()

    # The supervisor generates a key when none is given, and keeps it off argv.
    generated = await serf_agents("generated")
    assert len(generated.rpc_auth_key) >= 32
    assert all(generated.rpc_auth_key not in arg for arg in generated.command_line("serf"))
    assert oct(os.stat(generated.config_path).st_mode & 0o777) == "0o600"


# --------------------------------------------------------------------------
# cluster formation, members, tags
# --------------------------------------------------------------------------


async def test_three_agents_form_cluster_with_tags(cluster3: list[SerfAgent]) -> None:
    for observer in cluster3:
        members = by_name(await observer.rpc.members())
        assert set(members) == {"n0", "n1", "n2"}
        for agent in cluster3:
            member = members[agent.node_name]
            assert member.status == "alive"
            assert member.addr == "127.0.0.1"
            assert member.port == int(agent.bind.rsplit(":", 1)[1])
            assert member.tags == TAGS[agent.node_name]
            assert member.protocol_cur > 0 and member.delegate_cur > 0

    n0 = cluster3[0]
    coordinate = await n0.rpc.get_coordinate("n0")
    assert coordinate is not None and len(coordinate.vec) == 8
    assert await n0.rpc.get_coordinate("no-such-node") is None

    stats = await n0.rpc.stats()
    assert stats["agent"]["name"] == "n0"
    assert stats["serf"]["members"] == "3"


async def test_concurrent_requests_are_demultiplexed(cluster3: list[SerfAgent]) -> None:
    rpc = cluster3[0].rpc
    # An open stream interleaves its records with the responses below: each
    # tag update makes the agent put a member-update event for n0 on it.
    stream = await rpc.stream("member-update")
    updates = [rpc.tags(set={f"t{i}": str(i)}) for i in range(5)]
    calls = [
        *(rpc.members() for _ in range(10)),
        *(rpc.stats() for _ in range(10)),
        *(rpc.get_coordinate("n0") for _ in range(5)),
        *updates,
    ]
    results = await asyncio.gather(*calls)
    assert all(len(r) == 3 for r in results[:10])
    assert all(r["agent"]["name"] == "n0" for r in results[10:20])
    assert all(r is not None and len(r.vec) == 8 for r in results[20:25])
    assert results[25:] == [None] * 5

    # Updates add to the tags, so the last event shows all five.
    expected = {**TAGS["n0"], **{f"t{i}": str(i) for i in range(5)}}
    while True:
        event = await next_event(stream, "member-update", "n0", timeout=5)
        if by_name(event["Members"])["n0"].tags == expected:
            break
    await stream.stop()
    assert not stream.active
    # The connection is still healthy after stopping the stream.
    assert len(await rpc.members()) == 3


async def test_tag_update_propagates(cluster3: list[SerfAgent]) -> None:
    n0, n1, n2 = cluster3
    await n0.rpc.tags(set={"load": "0.5", "role": "gpu-large"}, delete=["zone"])
    expected = {"role": "gpu-large", "load": "0.5"}
    for observer in (n1, n2):
        took = await wait_until(
            lambda o=observer: sees(o, "n0", lambda m: m.tags == expected),
            timeout=10,
            what=f"{observer.node_name} to see n0's new tags",
        )
        print(f"tag update visible on {observer.node_name} after {took:.2f}s")


async def test_tags_over_512_bytes_are_rejected(cluster3: list[SerfAgent]) -> None:
    n0, n1, _ = cluster3
    # The limit applies to the encoded tag map as a whole, not to one value.
    with pytest.raises(SerfRPCError, match="exceeds limit of 512 bytes"):
        await n0.rpc.tags(set={"blob": "x" * 600})
    with pytest.raises(SerfRPCError, match="exceeds limit of 512 bytes"):
        await n0.rpc.tags(set={"a": "x" * 260, "b": "y" * 260})
    # Just under the limit is fine.
    await n0.rpc.tags(set={"blob": "x" * 400})

    # A refused update leaves the previous tags in place, locally and remotely.
    expected = {**TAGS["n0"], "blob": "x" * 400}
    assert by_name(await n0.rpc.members())["n0"].tags == expected
    await wait_until(lambda: sees(n1, "n0", lambda m: m.tags == expected), timeout=10, what="n1 to see n0's tags")


async def test_invalid_requests_are_refused_locally(cluster3: list[SerfAgent]) -> None:
    rpc = cluster3[0].rpc
    with pytest.raises(SerfInvalidRequest):
        await rpc.join([])
    with pytest.raises(SerfInvalidRequest):
        await rpc.tags(delete="zone")  # a string, not a list of names
    assert by_name(await rpc.members())["n0"].tags == TAGS["n0"]


# --------------------------------------------------------------------------
# events, failure, leave
# --------------------------------------------------------------------------


async def test_stream_reports_join_then_failure(serf_agents: AgentFactory) -> None:
    n0, n1 = await asyncio.gather(serf_agents("n0"), serf_agents("n1"))
    assert await n1.rpc.join(n0.bind) == 1
    stream = await n0.rpc.stream("member-join,member-failed")

    n2 = await serf_agents("n2", tags={"role": "ephemeral"})
    assert await n2.rpc.join([n0.bind]) == 1
    joined = await next_event(stream, "member-join", "n2", timeout=10)
    member = by_name(joined["Members"])["n2"]
    assert member.status == "alive" and member.tags == {"role": "ephemeral"} and member.addr == "127.0.0.1"

    await n2.kill()
    killed_at = time.monotonic()
    failed = await next_event(stream, "member-failed", "n2", timeout=20)
    detection = time.monotonic() - killed_at
    print(f"failure of n2 reported on the stream {detection:.1f}s after SIGKILL (profile=local)")
    assert by_name(failed["Members"])["n2"].status == "failed"
    assert by_name(await n0.rpc.members())["n2"].status == "failed"
    assert by_name(await n1.rpc.members())["n2"].status in {"failed", "alive"}  # may lag slightly

    await stream.stop()
    async with asyncio.timeout(1):
        assert [event async for event in stream] == []


async def test_leave_marks_member_left(cluster3: list[SerfAgent]) -> None:
    n0, n1, n2 = cluster3
    stream = await n0.rpc.stream("member-leave")
    started = time.monotonic()
    await n2.stop()
    print(f"graceful stop (leave + exit) took {time.monotonic() - started:.2f}s")
    assert n2.returncode == 0  # serf exited by itself after the leave
    with pytest.raises(SerfConnectionError):
        n2.rpc  # noqa: B018

    left = await next_event(stream, "member-leave", "n2", timeout=10)
    assert by_name(left["Members"])["n2"].status == "left"
    for observer in (n0, n1):
        await wait_until(
            lambda o=observer: sees(o, "n2", lambda m: m.status == "left"),
            timeout=10,
            what=f"{observer.node_name} to see n2 as left",
        )
    await stream.stop()


async def test_encrypted_cluster(serf_agents: AgentFactory) -> None:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    a, b = await asyncio.gather(serf_agents("enc-a", encrypt_key=key), serf_agents("enc-b", encrypt_key=key))
    assert await b.rpc.join([a.bind]) == 1
    assert (await a.rpc.stats())["serf"]["encrypted"] == "true"
    await wait_until(lambda: sees(a, "enc-b", lambda m: m.status == "alive"), timeout=10, what="enc-b alive")
    assert key not in " ".join(a.command_line("serf"))


# --------------------------------------------------------------------------
# connection loss and timeouts
# --------------------------------------------------------------------------


class ScriptedSerf:
    """A fake agent: answers handshake/auth/stream, then lets the test decide.

    Request headers are told from bodies by their "Command" key, exactly as
    the real agent's decoder knows what follows from the command.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []
        self.got_request = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedSerf:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        if self.writer is not None:
            self.writer.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    def send(self, *objs: Any) -> None:
        assert self.writer is not None
        for obj in objs:
            self.writer.write(msgpack.packb(obj))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        unpacker = msgpack.Unpacker(raw=False)
        while data := await reader.read(65536):
            unpacker.feed(data)
            for obj in unpacker:
                if not (isinstance(obj, dict) and "Command" in obj):
                    continue  # a request body
                command, seq = obj["Command"], obj["Seq"]
                if command in ("handshake", "auth", "stream"):
                    self.send({"Seq": seq, "Error": ""})
                else:
                    self.requests.append((command, seq))
                    self.got_request.set()

    async def wait_requests(self, count: int) -> None:
        while len(self.requests) < count:
            self.got_request.clear()
            await asyncio.wait_for(self.got_request.wait(), 5)


async def test_connection_loss_fails_pending_requests() -> None:
    async with ScriptedSerf() as fake:
        rpc = await SerfRPC.connect("127.0.0.1", fake.port, "key")
        stream = await rpc.stream("*")
        pending = [
            asyncio.create_task(rpc.members(timeout=30)),
            asyncio.create_task(rpc.stats(timeout=30)),
            asyncio.create_task(rpc.tags(set={"a": "b"}, timeout=30)),
        ]
        await fake.wait_requests(3)
        assert not any(task.done() for task in pending)

        started = time.monotonic()
        assert fake.writer is not None
        fake.writer.close()  # the agent goes away without answering
        for task in pending:
            with pytest.raises(SerfConnectionError):
                await task
        with pytest.raises(SerfConnectionError):
            await stream.next(timeout=5)
        assert time.monotonic() - started < 2, "pending requests must fail promptly, not time out"

        assert rpc.closed
        with pytest.raises(SerfConnectionError):
            await rpc.members()
        await rpc.close()


async def test_timeout_then_late_answer_is_discarded() -> None:
    async with ScriptedSerf() as fake, await SerfRPC.connect("127.0.0.1", fake.port) as rpc:
        with pytest.raises(SerfTimeoutError) as excinfo:
            await rpc.members(timeout=0.2)
        assert isinstance(excinfo.value, TimeoutError)

        slow = asyncio.create_task(rpc.stats())
        await fake.wait_requests(2)
        (_, late_seq), (_, stats_seq) = fake.requests
        # The late answer (header + body) for the timed-out request must
        # be skipped entirely, not handed to the next caller.
        fake.send(
            {"Seq": late_seq, "Error": ""},
            {"Members": []},
            {"Seq": stats_seq, "Error": ""},
            {"agent": {"name": "fake"}},
        )
        assert (await slow)["agent"] == {"name": "fake"}


async def test_agent_sigkill_ends_stream_with_connection_error(serf_agents: AgentFactory) -> None:
    agent = await serf_agents("doomed")
    rpc = agent.rpc
    stream = await rpc.stream("*")
    assert len(await rpc.members()) == 1
    # SIGKILL behind the supervisor's back (our own, not yet reaped, child) so
    # the client sees the connection drop rather than being closed by kill().
    assert agent.pid is not None
    os.kill(agent.pid, signal.SIGKILL)
    with pytest.raises(SerfConnectionError):
        await stream.next(timeout=5)
    with pytest.raises(SerfConnectionError):
        await rpc.members()
    await rpc.close()
    # stop() on a crashed agent doesn't try to leave; it just reaps it.
    await asyncio.wait_for(agent.stop(), timeout=5)
    assert agent.returncode == -signal.SIGKILL


async def test_connect_to_closed_port_raises_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens there now.
    with pytest.raises(SerfConnectionError, match="cannot connect"):
        await SerfRPC.connect("127.0.0.1", port, timeout=2)


# --------------------------------------------------------------------------
# supervisor configuration and failures
# --------------------------------------------------------------------------


async def test_missing_binary_raises_serf_not_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    agent = SerfAgent(node_name="x", data_dir=tmp_path, bind="127.0.0.1:7946")
    with pytest.raises(SerfNotInstalled) as excinfo:
        await agent.start()
    assert str(excinfo.value) == (
        "serf binary not found on PATH; install the Debian package 'serf' (apt-get install serf)"
    )
    assert isinstance(excinfo.value, HypercoreError)
    assert agent.pid is None


@pytest.mark.parametrize("rpc_addr", ["0.0.0.0:7373", "10.1.2.3:7373", "[::]:7373", "example.com:7373"])
def test_non_loopback_rpc_addr_is_refused(rpc_addr: str, tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(SerfConfigError, match="loopback"):
        SerfAgent(node_name="x", data_dir=tmp_path, rpc_addr=rpc_addr)


@pytest.mark.parametrize("rpc_addr", ["127.0.0.1:7373", "127.0.0.2:7373", "[::1]:7373", "localhost:7373"])
def test_loopback_rpc_addr_is_accepted(rpc_addr: str, tmp_path: os.PathLike[str]) -> None:
    SerfAgent(node_name="x", data_dir=tmp_path, rpc_addr=rpc_addr)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"encrypt_key": "not base64!"}, "base64"),
        ({"encrypt_key": base64.b64encode(b"short").decode()}, "16, 24 or 32"),
        ({"profile": "fast"}, "profile"),
        ({"tags": {"a=b": "c"}}, "tag name"),
        ({"bind": "nonsense"}, "host:port"),
    ],
)
def test_invalid_configuration_is_refused(kwargs: dict[str, Any], match: str, tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(SerfConfigError, match=match):
        SerfAgent(node_name="x", data_dir=tmp_path, **kwargs)


async def test_start_failure_reports_serf_output(serf_agents: AgentFactory) -> None:
    agent = await serf_agents("broken", start=False, extra_args=["-no-such-flag"])
    with pytest.raises(SerfAgentError, match="no-such-flag") as excinfo:
        await agent.start()
    assert "exited with status" in str(excinfo.value)
    assert agent.returncode is not None and not agent.running
    assert isinstance(excinfo.value, SerfError)
