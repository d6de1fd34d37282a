"""Request bodies of the HTTP API (responses are plain JSON documented in docs/api.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hypercore.workload import WorkloadSpec


class SpawnRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: WorkloadSpec
    policy: dict[str, Any] | None = Field(default=None, description="Inline policy (same JSON as a policy file).")
    dry_run: bool = False
    request_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")


class PlacementRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: dict[str, Any] | None = None
    spec: WorkloadSpec | None = None


class LocalSpawnRequest(BaseModel):
    """What a scheduling node sends to the chosen node."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    spec: WorkloadSpec
    request_id: str | None = Field(default=None, max_length=128)
    policy: dict[str, Any] | None = None
    deadline: float | None = Field(default=None, description="Unix time after which the node must not start it.")
    origin: str | None = Field(default=None, max_length=256, description="The node placing it, asked when a start ends late.")
