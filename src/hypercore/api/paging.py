"""Pages of a workload listing: `?limit=N&after=CURSOR`, the same on every node and merged on the asked one.

Workloads are ordered by (created_at, id). A cursor names the last workload of
a page as `<created_at>,<id>`; the next page is what comes after it. Each node
answers at most `limit` workloads after the cursor and whether it has more,
so the merged page is the first `limit` of at most N × limit workloads.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from hypercore.api.errors import ApiError
from hypercore.identity.pki import NODE_NAME_RE
from hypercore.workload import is_workload_id

MAX_PAGE = 10_000

Limit = Annotated[int | None, Query(ge=1, le=MAX_PAGE, description="At most this many workloads (one page).")]
After = Annotated[str | None, Query(max_length=80, description="The `next` cursor of the previous page.")]
MAX_NODES = 100  # names in one `nodes` filter (a URL of at most ~6.5 KB)
Nodes = Annotated[str | None, Query(description=f"Only these nodes, comma-separated (at most {MAX_NODES}): "
                                                "one request to each of them, not to every node.")]


def parse_nodes(nodes: str | None) -> list[str] | None:
    """The node names of a `nodes` filter, or None without one; 422 for a bad one."""
    if nodes is None:
        return None
    names = list(dict.fromkeys(nodes.split(",")))
    if len(names) > MAX_NODES:
        raise ApiError(422, "invalid_request", f"nodes: {len(names)} names are not allowed (at most {MAX_NODES}, "
                                               "comma-separated)")
    bad = next((n for n in names if not NODE_NAME_RE.fullmatch(n)), None)
    if bad is not None:
        raise ApiError(422, "invalid_request", f"nodes: {bad[:80]!r} is not a node name (letters, digits, '.' and "
                                               "'-', at most 63 characters, comma-separated)")
    return names


def order(workload: dict[str, Any]) -> tuple[float, str]:
    created = workload.get("created_at")
    return (float(created) if isinstance(created, (int, float)) else 0.0, str(workload.get("id")))


def cursor_of(workload: dict[str, Any]) -> str:
    created, wid = order(workload)
    return f"{created!r},{wid}"


def parse_cursor(after: str | None) -> tuple[float, str] | None:
    """The (created_at, id) an `after` cursor names; 422 naming the value when it is not one."""
    if after is None:
        return None
    created, _, wid = after.partition(",")
    try:
        value = float(created)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")) or not is_workload_id(wid):
        raise ApiError(422, "invalid_request", f"after: {after[:80]!r} is not a cursor; pass the `next` value of "
                                               "the previous page (<created_at>,<workload id>)")
    return value, wid


def page(workloads: list[dict[str, Any]], limit: int | None, after: tuple[float, str] | None) -> tuple[list[dict[str, Any]], bool]:
    """The sorted workloads after `after`, at most `limit` of them; and whether more follow."""
    rows = sorted((w for w in workloads if after is None or order(w) > after), key=order)
    if limit is None:
        return rows, False
    return rows[:limit], len(rows) > limit


def query(limit: int | None, after: str | None) -> str:
    """The same paging for the node-only listing of each node."""
    params = [f"limit={limit}"] if limit is not None else []
    if after is not None:
        params.append(f"after={after}")
    return "?" + "&".join(params) if params else ""
