"""Workload ids for people: short in tables, any unique prefix on the command line.

Ids are UUIDs (36 characters): a table shows the first SHORT_ID characters, as
Nomad does, so an 80-column table never cuts one; `--json` keeps full ids.
Commands that take `--id` accept a full id (sent as is) or a unique prefix of
at least MIN_PREFIX characters, resolved here by listing GET /v1/workloads.
A prefix only finds workloads that an alive node lists; give the full id of a
workload on a node that does not answer.
"""

from __future__ import annotations

from typing import Any

from hypercore.cli.common import EXIT_BAD_INPUT, fail, printable
from hypercore.workload import is_workload_id

SHORT_ID = 8
MIN_PREFIX = 4


def short_id(workload_id: Any) -> str:
    """The first SHORT_ID characters of an id (what tables show)."""
    return str(workload_id)[:SHORT_ID]


def resolve_id(client: Any, given: str) -> str:
    """The full id that `given` (a full id or a unique prefix) names; exits 2 when none or several do."""
    given = given.strip().lower()
    if is_workload_id(given):
        return given
    if len(given) < MIN_PREFIX:
        fail(f"--id '{printable(given)}': give at least {MIN_PREFIX} characters of the workload id "
             "(see `hypercore cluster list`)", EXIT_BAD_INPUT)
    listed = client.request("GET", "/v1/workloads")
    matches = sorted({str(w["id"]) for w in listed.get("workloads", []) if str(w["id"]).lower().startswith(given)})
    if len(matches) == 1:
        return matches[0]
    if not matches:
        unreachable = listed.get("unreachable") or {}
        note = f" ({len(unreachable)} node(s) did not answer; give the full id)" if unreachable else ""
        fail(f"no workload id starts with '{printable(given)}'{note}; see `hypercore cluster list`", EXIT_BAD_INPUT)
    shown = "\n".join(f"  {printable(m)}" for m in matches)
    fail(f"'{printable(given)}' matches {len(matches)} workloads; give more characters:\n{shown}", EXIT_BAD_INPUT)
