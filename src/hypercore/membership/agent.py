"""Supervision of a real ``serf agent`` subprocess.

hypercore does not embed Serf: each node runs HashiCorp's ``serf`` binary and
talks to it over its RPC port with :class:`~hypercore.membership.rpc.SerfRPC`.
:class:`SerfAgent` owns that subprocess: it writes the agent's configuration,
starts it, waits until the RPC port really answers, hands out a connected
client, and on shutdown leaves the cluster gracefully before making sure the
process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from hypercore.membership.rpc import (
    SerfConnectionError,
    SerfError,
    SerfRPC,
    SerfRPCError,
    SerfTimeoutError,
)
from hypercore.membership.serf_config import (
    Profile,
    SerfConfigError,
    require_loopback,
    split_host_port,
    validate_encrypt_key,
    validate_log_level,
    validate_profile,
    validate_tags,
    write_config_file,
)
from hypercore.membership.serf_process import (
    PARENT_DEATH_PREEXEC,
    SerfNotInstalled,
    find_serf_binary,
    signal_child,
)

__all__ = [
    "SerfAgent",
    "SerfAgentError",
    "SerfConfigError",
    "SerfNotInstalled",
    "find_serf_binary",
]

log = logging.getLogger(__name__)

TAGS_TIMEOUT_S: Final = 15.0  # over Serf's own broadcast timeout (5 s), which answers first
# memberlist tries a join's addresses one after another, each within its TCP timeout (10 s for `lan`, 30 s
# for `wan`): a join through an address that accepts and never answers takes that long before the next.
JOIN_TIMEOUT_PER_ADDRESS_S: Final = 32.0

_LOG_TAIL_LINES: Final[int] = 20
# Serf's Go runtime runs Go code on one OS thread at a time. Serf gossips, keeps timers and answers a few
# RPCs: one thread is plenty, and with one per core (Go's default) the scheduler woke a second thread to look
# for work at nearly every timer. 40 idle Serfs on 2 cores: 127 → 91 context switches a second each, 0.32 →
# 0.28 % of a core (bench/README.md). A GOMAXPROCS in the agent's environment wins.
GO_ENVIRONMENT: Final[Mapping[str, str]] = {"GOMAXPROCS": "1"}


class SerfAgentError(SerfError):
    """The serf agent process could not be started or did not become ready."""


class SerfAgent:
    """One ``serf agent`` subprocess and a connected RPC client to it.

    Usage::

        agent = SerfAgent(node_name="n1", data_dir=path, bind="10.0.0.5:7946")
        await agent.start()
        members = await agent.rpc.members()
        await agent.stop()

    Secrets (the RPC auth key and the gossip encryption key) go into a
    mode-0600 config file in *data_dir* rather than onto the command line,
    where any local user could read them with ``ps``.
    """

    def __init__(
        self,
        *,
        node_name: str,
        data_dir: str | os.PathLike[str],
        bind: str = "0.0.0.0:7946",
        rpc_addr: str = "127.0.0.1:7373",
        rpc_auth_key: str | None = None,
        encrypt_key: str | None = None,
        tags: Mapping[str, str] | None = None,
        profile: Profile = "lan",
        log_level: str = "info",
        extra_args: Sequence[str] = (),
        serf_binary: str = "serf",
        start_timeout: float = 10.0,
        stop_grace: float = 5.0,
    ) -> None:
        if not node_name:
            raise SerfConfigError("node_name must not be empty")
        split_host_port(bind, "bind")
        self._rpc_host, self._rpc_port = require_loopback(rpc_addr)
        validate_profile(profile)
        log_level = validate_log_level(log_level)
        if encrypt_key is not None:
            validate_encrypt_key(encrypt_key)
        if rpc_auth_key is not None and not rpc_auth_key:
            raise SerfConfigError("rpc_auth_key must not be empty (pass None to generate one)")

        self.node_name = node_name
        self.data_dir = Path(data_dir)
        self.bind = bind
        self.rpc_addr = rpc_addr
        # Always authenticate: any local process can otherwise drive the node.
        self.rpc_auth_key = rpc_auth_key or secrets.token_urlsafe(32)
        self.encrypt_key = encrypt_key
        self.tags = validate_tags(tags or {})
        self.profile = profile
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.serf_binary = serf_binary
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace

        self._process: asyncio.subprocess.Process | None = None
        self._rpc: SerfRPC | None = None
        self._tags_rpc: SerfRPC | None = None  # publish_tags' own connection (see there)
        self._log_offset = 0

    # -- paths and state --------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.data_dir / "serf-agent.json"

    @property
    def snapshot_path(self) -> Path:
        return self.data_dir / "serf.snapshot"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "serf.log"

    @property
    def rpc_host(self) -> str:
        return self._rpc_host

    @property
    def rpc_port(self) -> int:
        return self._rpc_port

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    @property
    def rpc(self) -> SerfRPC:
        """The connected RPC client (only between :meth:`start` and :meth:`stop`)."""
        if self._rpc is None or self._rpc.closed:
            raise SerfConnectionError(f"serf agent {self.node_name!r} is not running or its RPC client is closed")
        return self._rpc

    async def publish_tags(self, tags: Mapping[str, str]) -> None:
        """Set this node's tags for the cluster to see.

        Serf sets them at once, then waits until memberlist has gossiped the update enough times (up to
        its broadcast timeout, 5 s). When gossip is busy it is that wait that times out, not the update:
        the tags are set and queued. Retrying would queue one more update for every node to relay (at
        100 nodes on 2 cores, retries turned the 3.3 updates/s of the beacon refresh into 13/s), so a
        timeout here counts as done. The call has a connection of its own: Serf answers one request per
        connection at a time, and member reads and coordinate reads must not wait behind this one.
        """
        self.rpc  # noqa: B018 - raises when the agent is not running
        if self._tags_rpc is None or self._tags_rpc.closed:
            self._tags_rpc = await SerfRPC.connect(self._rpc_host, self._rpc_port, self.rpc_auth_key)
        try:
            await self._tags_rpc.tags(set=tags, timeout=TAGS_TIMEOUT_S)
        except (SerfTimeoutError, SerfRPCError) as exc:
            if isinstance(exc, SerfRPCError) and "timeout waiting for update broadcast" not in str(exc):
                raise
            log.info("serf is slow to gossip this node's new tags: they are set and queued", extra={"error": str(exc)})

    async def join(self, addrs: Sequence[str]) -> int:
        """Join the cluster through `addrs`; how many of them answered.

        A join can take seconds (memberlist's push-pull with each address in turn, on a machine whose CPU
        100 starting agents share), and Serf answers one request per RPC connection at a time: on the
        shared connection, member and coordinate reads waited behind it and timed out. It gets a
        connection of its own, for as long as it takes.
        """
        self.rpc  # noqa: B018 - raises when the agent is not running
        timeout = JOIN_TIMEOUT_PER_ADDRESS_S * max(1, len(addrs))
        client = await SerfRPC.connect(self._rpc_host, self._rpc_port, self.rpc_auth_key)
        try:
            return await client.join(list(addrs), timeout=timeout)
        finally:
            await client.close()

    def command_line(self, binary: str) -> list[str]:
        """The argv used to start the agent (contains no secrets)."""
        args = [
            binary,
            "agent",
            f"-node={self.node_name}",
            f"-bind={self.bind}",
            f"-rpc-addr={self.rpc_addr}",
            f"-config-file={self.config_path}",
            f"-snapshot={self.snapshot_path}",
            f"-log-level={self.log_level}",
            f"-profile={self.profile}",
        ]
        for key, value in self.tags.items():
            args.append(f"-tag={key}={value}")
        args.extend(self.extra_args)
        return args

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last *lines* lines serf wrote since the latest start."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                data = fh.read()
        except OSError:
            return ""
        text_lines = data.decode("utf-8", errors="replace").rstrip().splitlines()
        # On a bad flag serf prints the reason, then ~90 lines of usage text
        # that would push the reason out of the tail.
        for index, line in enumerate(text_lines):
            if line.startswith("==> Usage: serf agent"):
                text_lines = text_lines[:index]
                break
        return "\n".join(text_lines[-lines:])

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> SerfRPC:
        """Start the agent and return a connected, authenticated RPC client."""
        if self.running:
            raise SerfAgentError(f"serf agent {self.node_name!r} is already running (pid {self.pid})")
        binary = find_serf_binary(self.serf_binary)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_config_file(self.config_path, rpc_auth_key=self.rpc_auth_key, encrypt_key=self.encrypt_key)

        argv = self.command_line(binary)
        with self.log_path.open("ab") as log_file:
            log_file.write(f"==> hypercore: starting {' '.join(argv)}\n".encode())
            log_file.flush()
            self._log_offset = log_file.tell()
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                # A terminal's Ctrl-C goes to the whole foreground process
                # group; serf would then leave and exit on its own while we
                # are still shutting down. Only stop() decides when it leaves.
                start_new_session=True,
                preexec_fn=PARENT_DEATH_PREEXEC,
                env={**GO_ENVIRONMENT, **os.environ},
            )
        log.info("serf agent %s started (pid %s, rpc %s)", self.node_name, self._process.pid, self.rpc_addr)

        try:
            self._rpc = await self._wait_ready()
        except BaseException:
            await self._terminate(grace=0.0)
            raise
        return self._rpc

    async def _wait_ready(self) -> SerfRPC:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while True:
            if self._process.returncode is not None:
                raise SerfAgentError(
                    f"serf agent {self.node_name!r} exited with status {self._process.returncode} "
                    f"during start-up; last output:\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SerfAgentError(
                    f"serf agent {self.node_name!r} RPC at {self.rpc_addr} did not answer within "
                    f"{self.start_timeout}s (last error: {last_error}); last output:\n{self.log_tail()}"
                )
            try:
                client = await SerfRPC.connect(
                    self._rpc_host, self._rpc_port, self.rpc_auth_key, timeout=min(2.0, remaining)
                )
            except (SerfConnectionError, SerfTimeoutError, SerfRPCError) as exc:
                # Not listening yet, or someone else's agent holds the port
                # (then ours will fail to bind and exit, which the loop sees).
                last_error = exc
                await asyncio.sleep(0.05)
                continue
            try:
                name = (await client.stats(timeout=min(2.0, max(remaining, 0.1))))["agent"].get("name")
            except (SerfError, KeyError) as exc:
                await client.close()
                last_error = exc
                await asyncio.sleep(0.05)
                continue
            if name != self.node_name:
                await client.close()
                last_error = SerfAgentError(f"RPC port answered by another agent ({name!r})")
                await asyncio.sleep(0.05)
                continue
            return client

    async def stop(self, *, leave: bool = True, leave_timeout: float = 15.0) -> None:
        """Leave the cluster gracefully (unless *leave* is False), then make sure the process is gone.

        The process is sent SIGTERM, then SIGKILL if it is still there after
        ``stop_grace`` seconds, and is always reaped.
        """
        rpc, self._rpc = self._rpc, None
        await self._close_tags_rpc()
        left = False
        try:
            if leave and rpc is not None and not rpc.closed and self.running:
                try:
                    await rpc.leave(timeout=leave_timeout)
                    left = True
                except SerfError as exc:
                    log.warning("serf agent %s: graceful leave failed: %s", self.node_name, exc)
            if rpc is not None:
                await rpc.close()
        finally:
            # Serf exits by itself right after a successful leave; give it the
            # grace period to do so before signalling it.
            await self._terminate(grace=self.stop_grace, exiting=left)

    async def kill(self) -> None:
        """SIGKILL the agent without leaving: the cluster will see it fail."""
        rpc, self._rpc = self._rpc, None
        await self._close_tags_rpc()
        try:
            await self._terminate(grace=0.0, sigterm=False)
        finally:
            if rpc is not None:
                await rpc.close()

    async def _close_tags_rpc(self) -> None:
        tags_rpc, self._tags_rpc = self._tags_rpc, None
        if tags_rpc is not None:
            await tags_rpc.close()

    async def _terminate(self, *, grace: float, sigterm: bool = True, exiting: bool = False) -> None:
        process = self._process
        if process is None:
            return
        try:
            if process.returncode is None and exiting and grace > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), timeout=grace)
            if process.returncode is None and sigterm:
                signal_child(process, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), timeout=grace)
            if process.returncode is None:
                signal_child(process, signal.SIGKILL)
                await process.wait()
        finally:
            # Even if we were cancelled mid-way, don't leave the agent behind.
            signal_child(process, signal.SIGKILL)
        log.info("serf agent %s (pid %s) exited with status %s", self.node_name, process.pid, process.returncode)

    async def __aenter__(self) -> SerfAgent:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<SerfAgent {self.node_name!r} bind={self.bind} rpc={self.rpc_addr} {state}>"
