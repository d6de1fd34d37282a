"""A geo test-bed's topology file: regions, their nodes, and the link between every pair of regions.

    {"regions": {"eu": {"nodes": [{"name": "eu-1", "price_per_gb": 0.02, "exec": false}, ...]}, ...},
     "links": [{"between": ["eu", "us"], "rtt_ms": 80},
               {"between": ["eu", "eu"], "rtt_ms": 2},
               {"between": ["eu", "ap"], "rtt_ms": 160, "loss_percent": 1}, ...]}

Every pair of regions, a region with itself included, has exactly one link
(in either order). The WAN emulator holds each packet for half the link's
round-trip time and drops it with `loss_percent` in each direction. A node
is a real agent: `price_per_gb` is its beacon price, `exec` whether it runs
`--command` workloads (a node without it only takes requests), `reputation`
the prior the operator attests in its certificate, `cpu`/`mem_mb` what it
offers.
"""

from __future__ import annotations

import json
from itertools import combinations_with_replacement
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hypercore.config import REGION
from hypercore.errors import HypercoreError
from hypercore.policy.errors import describe

MAX_NODES = 200  # one /16 of addresses, and far more than two cores can run
_NODE_NAME = r"^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$"  # also part of a namespace name (hcNNN-<name>, 15+ chars)


class TopologyError(HypercoreError):
    """A topology file that cannot be used; the message names the file, the field and what is allowed."""


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=_NODE_NAME)]
    price_per_gb: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] = 0.01
    exec: bool = True
    reputation: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    cpu: Annotated[float, Field(gt=0, le=1024, allow_inf_nan=False)] = 2.0
    mem_mb: Annotated[float, Field(gt=0, le=1e7, allow_inf_nan=False)] = 2048.0


class RegionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: Annotated[list[NodeSpec], Field(min_length=1)]


class LinkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    between: Annotated[list[str], Field(min_length=2, max_length=2)]
    rtt_ms: Annotated[float, Field(ge=0, le=10_000, allow_inf_nan=False)]
    loss_percent: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] = 0.0


class Topology(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    regions: Annotated[dict[str, RegionSpec], Field(min_length=1)]
    links: list[LinkSpec]

    @model_validator(mode="after")
    def _complete(self) -> "Topology":
        for region in self.regions:
            if not REGION.fullmatch(region):
                raise ValueError(f"regions: {region!r} is not a region name (1 to 32 ASCII letters, digits, '.', "
                                 "'_' or '-', starting with a letter or digit)")
        names = [n.name for r in self.regions.values() for n in r.nodes]
        if len(names) > MAX_NODES:
            raise ValueError(f"regions: {len(names)} nodes, at most {MAX_NODES}")
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"regions: node name(s) {', '.join(twice)} appear more than once")
        seen: dict[frozenset[str], int] = {}
        for i, link in enumerate(self.links):
            unknown = [r for r in link.between if r not in self.regions]
            if unknown:
                raise ValueError(f"links[{i}].between: {unknown[0]!r} is not a region of this topology "
                                 f"({', '.join(self.regions)})")
            pair = frozenset(link.between)
            if pair in seen:
                raise ValueError(f"links[{i}]: {' - '.join(link.between)} is already set by links[{seen[pair]}]")
            seen[pair] = i
        missing = [f"{a} - {b}" for a, b in combinations_with_replacement(list(self.regions), 2)
                   if frozenset((a, b)) not in seen]
        if missing:
            raise ValueError(f"links: no link for {', '.join(missing)} (every pair of regions, and each region "
                             "with itself, needs one)")
        return self

    def nodes(self) -> list[tuple[str, NodeSpec]]:
        """(region, node) for every node, in file order."""
        return [(region, node) for region, spec in self.regions.items() for node in spec.nodes]

    def link(self, a: str, b: str) -> LinkSpec:
        pair = frozenset((a, b))
        return next(link for link in self.links if frozenset(link.between) == pair)


def load_topology(path: Path) -> Topology:
    """The topology in `path`, or TopologyError naming the file, each bad field, its value and what is allowed."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TopologyError(f"--topology {path}: {exc.strerror or exc}") from None
    if len(raw) > 1024 * 1024:
        raise TopologyError(f"--topology {path}: over 1 MiB; not a topology file")
    try:
        data: Any = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise TopologyError(f"--topology {path}: not valid JSON: {exc}") from None
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
            problems.append(f"--topology {path}: {where + ': ' if where else ''}{describe(err)}")
        raise TopologyError("\n".join(problems)) from None
