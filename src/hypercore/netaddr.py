"""Addresses in flags and beacons: `host:port` (IPv6 as `[::1]:port`), and whether a host is loopback."""

from __future__ import annotations

import ipaddress

from hypercore.errors import HypercoreError


class AddressError(HypercoreError, ValueError):
    """An address that is not `host:port`, or whose port is out of range."""


def split_host_port(value: str, what: str, *, allow_port_zero: bool = False,
                    default_host: str | None = None) -> tuple[str, int]:
    """`host:port` → (host, port); `what` (a flag name) names it in errors.

    `allow_port_zero` accepts port 0 (let the OS pick); `default_host` fills an
    empty host (`:8001`), which is otherwise refused.
    """
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not (host or default_host):
        raise AddressError(f"{what} {value!r} must be host:port, e.g. 127.0.0.1:8001 (IPv6 as [::1]:8001)")
    if not (port_text.isascii() and port_text.isdigit()):
        raise AddressError(f"{what} {value!r} has an invalid port {port_text!r}")
    port = int(port_text)
    if not (0 if allow_port_zero else 1) <= port <= 65535:
        raise AddressError(f"{what} {value!r}: the port must be within {0 if allow_port_zero else 1}-65535")
    return host or str(default_host), port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def canonical_ip(host: str) -> str:
    """An IP address as a socket reports a peer's (`0:0::1` is `::1`, an IPv4-mapped one its IPv4 form); a host
    name as it is."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)
