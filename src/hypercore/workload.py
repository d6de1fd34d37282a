"""What a workload is: the spec a user submits and the record a node keeps.

Shared by the API, the scheduler, the runtime drivers and the store, so that a
spec is validated once, at the edge, with clear errors.
"""

from __future__ import annotations

import re
import uuid
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Always fullmatch (`$` would let a trailing newline through) and ASCII only (`\d` is any Unicode
# digit, and IGNORECASE folds the Kelvin sign into `k`).
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)  # POSIX names
_PORT = re.compile(r"([0-9]{1,5}):([0-9]{1,5})(/(tcp|udp))?", re.ASCII)
# An OCI reference: [registry[:port]/]path[:tag][@digest], no spaces or shell metacharacters.
_IMAGE_REF = re.compile(r"[a-z0-9][a-z0-9._/:@+-]*", re.IGNORECASE | re.ASCII)


class WorkloadState(str, Enum):
    PENDING = "pending"  # accepted, not yet started by the driver
    RUNNING = "running"
    EXITED = "exited"  # ended by itself; exit_code says how
    STOPPED = "stopped"  # ended on request
    FAILED = "failed"  # the driver could not start it, or it was lost

    @property
    def finished(self) -> bool:
        return self in (WorkloadState.EXITED, WorkloadState.STOPPED, WorkloadState.FAILED)


# The canonical state sets. WorkloadState is a str enum (it hashes and compares
# like its value), so a state string read from JSON tests as well: "pending" in LIVE_STATES.
# Accepted and not finished: it holds (or is about to hold) the node's resources.
LIVE_STATES: frozenset[WorkloadState] = frozenset({WorkloadState.PENDING, WorkloadState.RUNNING})
# A workload "exists" (counts as placed) in these; a FAILED one never ran or was lost.
EXISTING_STATES: frozenset[WorkloadState] = LIVE_STATES | {WorkloadState.EXITED, WorkloadState.STOPPED}


class WorkloadSpec(BaseModel):
    """A workload: a shell command (exec driver), or an image run as a container or booted as a microVM."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: Annotated[str, Field(min_length=1, max_length=8192)] | None = Field(
        default=None, description="Shell command run with /bin/sh -c (needs the `exec` capability)."
    )
    image_ref: Annotated[str, Field(min_length=1, max_length=512)] | None = Field(
        default=None, description="OCI image reference (needs the `container` capability)."
    )
    runtime: Literal["container", "vm"] | None = Field(
        default=None, description="How an image runs: `container` (the default) or `vm`, booted as its own "
                                  "microVM (needs the `vm` capability)."
    )
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=256, description="Command override for an image."
    )
    cpu: Annotated[float, Field(ge=0.01, le=1024, allow_inf_nan=False)] = Field(default=1.0, description="CPU cores (at least 0.01).")
    mem: Annotated[int, Field(gt=0, le=16 * 1024 * 1024)] = Field(default=256, description="Memory in MB.")
    ports: list[str] = Field(default_factory=list, max_length=64, description="HOST:CONTAINER[/tcp|udp] mappings.")
    env: dict[str, Annotated[str, Field(max_length=32768)]] = Field(default_factory=dict, max_length=256)

    @field_validator("image_ref")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not _IMAGE_REF.fullmatch(value):
            raise ValueError(f"{value!r} is not an image reference like 'nginx:latest' or 'registry:5000/app@sha256:...'")
        return value

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: list[str]) -> list[str]:
        for item in value:
            m = _PORT.fullmatch(item)
            if not m or not (1 <= int(m.group(1)) <= 65535 and 1 <= int(m.group(2)) <= 65535):
                raise ValueError(f"port mapping {item!r} must be HOST:CONTAINER with ports 1-65535, e.g. 8080:80")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not _ENV_KEY.fullmatch(key):
                raise ValueError(f"environment variable name {key!r} must be ASCII letters, digits and '_', "
                                 "not starting with a digit ([A-Za-z_][A-Za-z0-9_]*)")
            if "\x00" in text:
                raise ValueError(f"environment variable {key}: a value cannot contain a NUL character")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("a command cannot contain a NUL character")
        return value

    @field_validator("args")
    @classmethod
    def _args(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any("\x00" in arg for arg in value):
            raise ValueError("an argument cannot contain a NUL character")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> "WorkloadSpec":
        if (self.command is None) == (self.image_ref is None):
            raise ValueError("give exactly one of 'command' or 'image_ref'")
        if self.args is not None and self.image_ref is None:
            raise ValueError("'args' overrides an image's command; with 'command' put everything in the command")
        if self.runtime is not None and self.image_ref is None:
            raise ValueError("'runtime' says how an image runs; a 'command' always runs with exec")
        return self

    @property
    def capability(self) -> Literal["exec", "container", "vm"]:
        """The runtime capability a node needs to run this spec (the placement filters on it)."""
        if self.command is not None:
            return "exec"
        return "vm" if self.runtime == "vm" else "container"


def new_workload_id() -> str:
    return str(uuid.uuid4())


def is_workload_id(value: str) -> bool:
    """True only for a canonical UUID string; such ids are safe in file paths."""
    try:
        return str(uuid.UUID(value)) == value
    except (ValueError, AttributeError, TypeError):
        return False


# A canonical workload id, for pydantic fields (is_workload_id says the same in code).
WORKLOAD_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# A user (token) name, as hypercore.identity.tokens allows it.
# A user (token) name: the one definition (identity.tokens checks tokens with it, api.auth vouched names).
USER_NAME = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}"
OWNER_PATTERN = rf"^{USER_NAME}$"


class LocalSpawnRequest(BaseModel):
    """A placement attempt: what a scheduling node sends the chosen node (hypercore.placement)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=WORKLOAD_ID_PATTERN)
    spec: WorkloadSpec
    request_id: str | None = Field(default=None, max_length=256)
    policy: dict[str, Any] | None = None
    deadline: float | None = Field(default=None, description="Unix time after which the node must not start it.")
    origin: str | None = Field(default=None, max_length=256, description="The node placing it, asked when a start ends late.")
    owner: str | None = Field(default=None, pattern=OWNER_PATTERN,
                              description="The user it is placed for, vouched for by the calling node's certificate.")
