"""Checking a serf agent's configuration, and writing its config file.

Everything here runs before a ``serf agent`` process is started, so a bad
setting is refused with :class:`SerfConfigError` instead of surfacing as an
agent that exits during start-up. :class:`~hypercore.membership.agent.SerfAgent`
uses it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal

from hypercore.membership.rpc_types import SerfError
from hypercore import netaddr

__all__ = [
    "LOG_LEVELS",
    "PROFILES",
    "Profile",
    "SerfConfigError",
    "require_loopback",
    "split_host_port",
    "validate_encrypt_key",
    "validate_log_level",
    "validate_profile",
    "validate_tags",
    "write_config_file",
]

Profile = Literal["lan", "wan", "local"]
PROFILES: Final[frozenset[str]] = frozenset({"lan", "wan", "local"})
LOG_LEVELS: Final[frozenset[str]] = frozenset({"trace", "debug", "info", "warn", "err"})
_ENCRYPT_KEY_SIZES: Final[frozenset[int]] = frozenset({16, 24, 32})


class SerfConfigError(SerfError, ValueError):
    """The agent's configuration is invalid (refused before anything is started)."""


def split_host_port(value: str, what: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:port``) → (host, port); ``what`` names it in errors."""
    try:
        return netaddr.split_host_port(value, what)
    except netaddr.AddressError as exc:
        raise SerfConfigError(str(exc)) from None


def require_loopback(rpc_addr: str) -> tuple[str, int]:
    """The RPC address as (loopback IP, port); anything else is refused."""
    # Serf's RPC port can make the node leave, change its tags or join other
    # clusters, and its only protection is a shared key sent in clear text, so
    # it must never be reachable from the network.
    host, port = split_host_port(rpc_addr, "rpc_addr")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise SerfConfigError(
            f"rpc_addr {rpc_addr!r} must be a loopback IP address (e.g. 127.0.0.1:7373), not a host name"
        ) from None
    if not ip.is_loopback:
        raise SerfConfigError(
            f"rpc_addr {rpc_addr!r} is not a loopback address; the serf RPC port must only listen "
            "on 127.0.0.0/8 or ::1 because it controls the node"
        )
    return str(ip), port


def validate_encrypt_key(key: str) -> None:
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise SerfConfigError("encrypt_key must be base64 (generate one with 'serf keygen')") from None
    if len(raw) not in _ENCRYPT_KEY_SIZES:
        raise SerfConfigError(f"encrypt_key must decode to 16, 24 or 32 bytes, not {len(raw)}")


def validate_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags as a str → str dict, refusing what ``-tag k=v`` cannot carry."""
    clean: dict[str, str] = {}
    for key, value in tags.items():
        key, value = str(key), str(value)
        # Serf splits "-tag k=v" at the first '=', so a key can't contain one.
        if not key or "=" in key:
            raise SerfConfigError(f"invalid tag name {key!r}: must be non-empty and contain no '='")
        if "\x00" in key or "\x00" in value:
            raise SerfConfigError(f"tag {key!r} contains a NUL byte")
        clean[key] = value
    return clean


def validate_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise SerfConfigError(f"profile must be one of {sorted(PROFILES)}, not {profile!r}")


def validate_log_level(log_level: str) -> str:
    """The level in the lower case serf wants."""
    if log_level.lower() not in LOG_LEVELS:
        raise SerfConfigError(f"log_level must be one of {sorted(LOG_LEVELS)}, not {log_level!r}")
    return log_level.lower()


def write_config_file(path: Path, *, rpc_auth_key: str, encrypt_key: str | None) -> None:
    """The agent's secrets as a mode-0600 JSON config file (argv is readable by any local user)."""
    config: dict[str, str] = {"rpc_auth": rpc_auth_key}
    if encrypt_key:
        config["encrypt_key"] = encrypt_key
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(config, fh)
    # O_CREAT's mode doesn't apply to a file that already existed.
    os.chmod(path, 0o600)
