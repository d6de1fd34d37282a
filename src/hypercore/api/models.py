"""Request bodies of the HTTP API (responses are plain JSON documented in docs/api.md)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from hypercore.workload import LocalSpawnRequest, WorkloadSpec

__all__ = ["ForwardedSpawnRequest", "LocalSpawnRequest", "PlacementRequest", "SpawnRequest"]

# Used with fullmatch, ASCII only (`$` would let a trailing newline through; `\w` is any Unicode letter).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]+(@[A-Za-z0-9][A-Za-z0-9.-]{0,62})?", re.ASCII)
# hypercore.placement.links.REPORTED_LINKS; not imported: the api's models depend on no placement code.
_REPORTED_LINKS = 256
NodeName = Annotated[str, StringConstraints(min_length=1, max_length=253)]
LinkFigures = Annotated[list[Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)] | None],
                        Field(min_length=3, max_length=3)]


class SpawnRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: WorkloadSpec
    policy: dict[str, Any] | None = Field(default=None, description="Inline policy (same JSON as a policy file).")
    dry_run: bool = False
    # Letters, digits and . _ : -, and at the end "@node" for a request id that names its home (the node that
    # places it while it is a member: hypercore.placement.ids.home_of), a node name as certificates hold them.
    request_id: str | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("request_id")
    @classmethod
    def _request_id(cls, value: str | None) -> str | None:
        if value is not None and not _REQUEST_ID.fullmatch(value):
            raise ValueError(f"{value[:80]!r} is not a request id: letters, digits and . _ : - (at most 128), "
                             "optionally ending in @NODE, the name of the node that places it")
        return value
    near: str | None = Field(default=None, min_length=1, max_length=253,
                             description="Node whose network position latency is measured from "
                                         "(default: the node that receives the request).")


class PlacementRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: dict[str, Any] | None = None
    spec: WorkloadSpec | None = None
    near: str | None = Field(default=None, min_length=1, max_length=253)


class ForwardedSpawnRequest(SpawnRequest):
    """A user's spawn as the node that received it forwards it to the request id's owner (node-only route)."""

    origin_links: dict[NodeName, LinkFigures] | None = Field(
        default=None, max_length=_REPORTED_LINKS,
        description="The forwarding node's own probe figures [latency_ms, jitter_ms, packet_loss] of its "
                    "nearest peers; used only when `near` is that node (hypercore.placement.links).")
