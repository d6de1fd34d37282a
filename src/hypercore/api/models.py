"""Request bodies of the HTTP API (responses are plain JSON documented in docs/api.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hypercore.workload import LocalSpawnRequest, WorkloadSpec

__all__ = ["LocalSpawnRequest", "PlacementRequest", "SpawnRequest"]


class SpawnRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: WorkloadSpec
    policy: dict[str, Any] | None = Field(default=None, description="Inline policy (same JSON as a policy file).")
    dry_run: bool = False
    request_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    near: str | None = Field(default=None, min_length=1, max_length=253,
                             description="Node whose network position latency is measured from "
                                         "(default: the node that receives the request).")


class PlacementRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: dict[str, Any] | None = None
    spec: WorkloadSpec | None = None
    near: str | None = Field(default=None, min_length=1, max_length=253)
