"""The agent's settings, declared once: flags, environment variables and a config file all feed this model.

`AgentConfig` is the single declaration. `agent_options` turns its fields into
the `hypercore cluster` flags (the flag is the field name in kebab case, its
environment variable `HYPERCORE_<FIELD>`, its help the field's description),
and `--config FILE` (TOML or JSON, keys as field names) supplies defaults
under both. Precedence: command line, then environment, then the file, then
the field's default. Every value is checked here, once, and a bad one is
reported with the flag that carries it.
"""

from __future__ import annotations

import json
import re
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hypercore.errors import HypercoreError
from hypercore.netaddr import AddressError, split_host_port

ENV_PREFIX = "HYPERCORE"
# A region name: short, ASCII, printable anywhere (tags, tables, logs). The beacon checks the same pattern.
REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}", re.ASCII)


class ConfigError(HypercoreError):
    """A flag, variable or config-file entry has a value the agent cannot run with."""


def _address(flag: str, *, port_zero: bool) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            split_host_port(value, flag, allow_port_zero=port_zero, default_host="0.0.0.0")
        except AddressError as exc:
            raise ValueError(str(exc)) from None
        return value
    return check


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    join: tuple[str, ...] = Field((), description="Gossip addresses of members to join through (retried).")
    node_name: str | None = Field(None, description="Unique node name (default: the name the certificate "
                                                    "certifies; with --insecure, hostname plus a random suffix).")
    data_dir: Path = Field(Path("~/.local/share/hypercore"), validate_default=True,
                           description="Registry, Serf snapshot, workload logs.")
    cluster_bind_addr: str = Field("0.0.0.0:7946", description="Serf gossip address.")
    serf_rpc_addr: str = Field("127.0.0.1:7373", description="Serf RPC address (loopback only).")
    http_bind_addr: str = Field("0.0.0.0:8001", description="HTTPS API and /metrics address.")
    cluster_policy: Path | None = Field(None, description="Default placement policy file (reloaded on SIGHUP).")
    beacon_price: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] = Field(
        0.01, description="Price per GB this node asks.")
    beacon_reputation: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = Field(
        1.0, description="Reputation this node claims, 0..1.")
    ca_file: Path | None = Field(None, description="The cluster CA certificate (ca.pem): admits members, "
                                                   "verifies user tokens.")
    cert_file: Path | None = Field(None, description="This node's certificate (hypercore tls cert create).")
    key_file: Path | None = Field(None, description="This node's private key.")
    encrypt: str | None = Field(None, description="Gossip encryption key from `hypercore keygen`: from "
                                                  "HYPERCORE_ENCRYPT, --encrypt-file or --config, never the command "
                                                  "line (visible to every local user).")
    enable_exec: bool = Field(False, description="Run `--command` workloads on this node.")
    exec_uid_base: Annotated[int, Field(ge=1000, le=2**32 - 65_538)] = Field(
        2_000_000, description="First of the 65536 uids exec workloads run as, one of its own each (uids of "
                               "accounts are skipped).")
    disable_exec_zygote: bool = Field(False, description="Start each exec supervisor as a new Python process "
                                                         "instead of forking it from one loaded ahead of need "
                                                         "(about 18 ms more CPU per start).")
    insecure: bool = Field(False, description="No TLS, admission or gossip encryption (loopback addresses only; "
                                              "never on a shared machine).")
    container_engine: str | None = Field(None, description="podman, docker or a path (default: podman, else "
                                                           "docker, if one answers).")
    disable_containers: bool = Field(False, description="Do not offer the `container` capability.")
    enable_vm: bool = Field(False, description="Boot `--runtime vm` image workloads as QEMU microVMs here (capability "
                                               "`vm`, and `vm-kvm` when KVM really works); needs qemu-system-x86 "
                                               "and podman.")
    vm_cache_dir: Path | None = Field(None, description="Where the guest kernel, initramfs and root disks are cached "
                                                        "(default: DATA_DIR/vm).")
    placement_timeout: Annotated[float, Field(ge=0.1, le=3600, allow_inf_nan=False)] = Field(
        15.0, description="Deadline, in seconds, of one placement attempt on a node.")
    respawn_on_node_failure: bool = Field(False, description="When a node fails, place its workloads again "
                                                             "(once in the cluster; see docs/cluster.md).")
    capacity_cpu: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] | None = Field(
        None, description="CPU cores offered (default: the machine's).")
    capacity_mem: Annotated[float, Field(gt=0, le=1e12, allow_inf_nan=False)] | None = Field(
        None, description="Memory offered in MB (default: the machine's).")
    serf_profile: Literal["lan", "wan", "local"] = Field(
        "lan", description="Serf timing profile; `local` detects failures fastest (one machine).")
    region: str | None = Field(None, description="This node's region, e.g. eu-west (letters, digits, '.', '_', '-'; "
                                                 "at most 32, starting with a letter or digit): published in its "
                                                 "signed beacon, shown by `cluster metrics`.")
    probe_interval: Annotated[float, Field(ge=0.1, le=3600, allow_inf_nan=False)] = Field(
        2.0, description="Seconds between two rounds of RTT probes.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    max_log_mb: Annotated[int, Field(ge=1, le=1024 * 1024)] = Field(
        64, description="Cap in MiB of each workload's log on disk, and of one `logs` answer.")
    max_workloads: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        256, description="Workloads pending or running on this node at most; more are refused (at capacity).")
    spawn_rate: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = Field(
        20.0, description="Spawns per second one user (token name) may send to this node, on average (else 429).")
    spawn_burst: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        40, description="Spawns one user may send at once before --spawn-rate applies.")
    gc_after: str = Field("24h", description="Remove finished workloads (record, logs, container) this long after "
                                             "they ended: 24h, 90m, 45s, 3600 (seconds); `off` keeps them.")

    _cluster = field_validator("cluster_bind_addr")(_address("--cluster-bind-addr", port_zero=False))
    _http = field_validator("http_bind_addr")(_address("--http-bind-addr", port_zero=True))
    _rpc = field_validator("serf_rpc_addr")(_address("--serf-rpc-addr", port_zero=False))

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and REGION.fullmatch(value) is None:
            raise ValueError("not a region name: 1 to 32 ASCII letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit (e.g. eu-west)")
        return value

    @field_validator("gc_after")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value.strip()

    @property
    def gc_after_seconds(self) -> float | None:
        """--gc-after in seconds; None: `off`."""
        return parse_duration(self.gc_after)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> float | None:
    """'24h', '90m', '45s', '2d' or plain seconds → seconds; 'off' → None. ValueError otherwise."""
    text = value.strip().lower()
    if text == "off":
        return None
    m = _DURATION.fullmatch(text)
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)] if m else 0.0
    if not m or not 0 < seconds <= 10 * 365 * 86400:
        raise ValueError(f"{value!r} is not a duration like 24h, 90m, 45s or 3600 (seconds), or off")
    return seconds


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def parse(values: dict[str, Any], source: str = "flags") -> AgentConfig:
    """The model from raw values, or ConfigError naming each bad flag, its value and what is allowed."""
    try:
        return AgentConfig.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else ""
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                problems.append(f"{source}: unknown setting {name!r} (allowed: {', '.join(AgentConfig.model_fields)})")
            elif msg.startswith(flag(name)):
                problems.append(msg)  # an address check names its flag itself
            else:
                problems.append(f"{flag(name)} {err.get('input')!r}: {msg}")
        raise ConfigError("; ".join(problems)) from None


MAX_CONFIG_BYTES = 1024 * 1024


def _read_regular(path: Path) -> bytes:
    """A regular file's bytes. A FIFO or a device (it would block, or never end) is refused before
    opening; the open does not block and is checked again, in case the file was swapped meanwhile."""
    import os
    import stat

    refused = ConfigError(f"--config {path}: not a regular file (a FIFO, a device or a directory); refusing to read it")
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise refused
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)), "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise refused
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"--config {path}: over {MAX_CONFIG_BYTES} bytes; not a settings file")
    return raw


def _json_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > 100:  # no setting needs more; past 4,300 digits int() itself would refuse, less clearly
        raise ValueError(f"integer {text[:20]}... has {digits} digits, far too large for any setting")
    return int(text)


def _line_of(text: str, key: str, is_json: bool) -> int | None:
    """The line (from 1) where top-level `key` is set in a settings file's text, if a plain search finds it."""
    k = re.escape(key)
    pattern = rf'"{k}"\s*:' if is_json else rf"""^[ \t]*\[{{0,2}}[ \t]*(["']?){k}\1[ \t]*[=.\]]"""
    m = re.search(pattern, text, re.MULTILINE)
    return text.count("\n", 0, m.start()) + 1 if m else None


def load_file(path: Path) -> dict[str, Any]:
    """Settings from a TOML or JSON file whose keys are field names (or flag names)."""
    try:
        text = _read_regular(path).decode("utf-8")
        data = json.loads(text, parse_int=_json_int) if path.suffix == ".json" else tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ConfigError(f"--config {path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {why}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a table of settings")
    settings = {str(k).removeprefix("--").replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(settings) - set(AgentConfig.model_fields))
    if unknown:
        written = {str(k).removeprefix("--").replace("-", "_"): str(k) for k in data}
        shown = ", ".join((k if k.isprintable() else ascii(k))
                          + (f" ({path}:{line})" if (line := _line_of(text, written[k], path.suffix == ".json")) else "")
                          for k in unknown)
        raise ConfigError(f"--config {path}: unknown setting(s) {shown} "
                          f"(allowed: {', '.join(AgentConfig.model_fields)})")
    if isinstance(settings.get("join"), list):
        settings["join"] = tuple(settings["join"])
    return settings


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """(click type, is a flag) for a field's annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and args:
        base = args[0]
    if typing.get_origin(base) is Annotated:
        base = typing.get_args(base)[0]
    if base is bool:
        return None, True
    if typing.get_origin(base) is Literal:
        return click.Choice([str(a) for a in typing.get_args(base)]), False
    if base is Path:
        return click.Path(path_type=Path), False
    return (float if base is float else str), False


def agent_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The flags of every AgentConfig field (and `--config`), added to a click command."""
    for name, info in reversed(list(AgentConfig.model_fields.items())):
        if name == "join":
            func = click.argument("join", nargs=-1, metavar="[JOIN_ADDR]...")(func)
            continue
        kind, is_flag = _click_type(info.annotation)
        default = info.default
        func = click.option(flag(name), name, is_flag=is_flag, type=kind, default=default,
                            show_default=default not in (None, False), help=info.description,
                            envvar=f"{ENV_PREFIX}_{name.upper()}", show_envvar=True)(func)
    return click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), is_eager=True,
                        expose_value=False, callback=_use_config_file,
                        help="TOML or JSON file of settings (keys: the flags' names); flags and variables win.")(func)


def _use_config_file(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        try:
            ctx.default_map = {**(ctx.default_map or {}), **load_file(value)}
        except ConfigError as exc:
            raise click.BadParameter(str(exc).removeprefix(f"--config {value}: "), param_hint="--config") from None
