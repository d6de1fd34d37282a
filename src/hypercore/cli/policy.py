"""`hypercore policy …`: schema, validate, explain."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console

from hypercore.cli.common import (
    EXIT_INVALID,
    EXIT_NO_NODE,
    check_regular,
    print_json,
    printable,
    read_nodes_file,
    user_errors,
)
from hypercore.cli.render import print_decision, print_decision_data
from hypercore.policy import Policy, PolicyError, decide, load_policy_file
from hypercore.policy.node_columns import table_from_json


@click.group("policy")
def policy_group() -> None:
    """Write, check and try placement policies."""


@policy_group.command("schema")
def schema() -> None:
    """Print the JSON Schema of a policy file."""
    print_json(Policy.model_json_schema())


def _warn(path: Path, policy: Policy) -> None:
    """Warnings about a policy that loads (stderr, like errors): zero limits, keys without effect."""
    shown = printable(path)
    for rule in policy.rules.zero_limits():
        click.echo(f"{shown}: rules.{rule}: warning: 0 is a literal zero limit, not 'no limit' (omit the rule for no limit)",
                   err=True)
    for key in policy.rules.deprecated_given():
        click.echo(f"{shown}: {key}: warning: has no effect and is ignored (it had none in the original system "
                   "either); rank nodes with the `scoring` weights", err=True)


@policy_group.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@user_errors
def validate(files: tuple[Path, ...]) -> None:
    """Check policy files: exit 0 when all are valid, 1 otherwise.

    Prints `FILE: ok (...)` on stdout for each valid file; problems (one line each,
    with the field and its line and column) and warnings go to stderr.
    """
    bad = False
    for path in files:
        try:
            policy = load_policy_file(path)
        except PolicyError as exc:
            bad = True
            for problem in exc.problems:
                click.echo(printable(problem), err=True)
            continue
        _warn(path, policy)
        click.echo(f"{printable(path)}: ok (policy '{printable(policy.name)}', mode {policy.mode})")
    raise SystemExit(EXIT_INVALID if bad else 0)


@policy_group.command("explain")
@click.argument("policy_file", metavar="POLICY", type=click.Path(path_type=Path))
@click.option("--nodes", "nodes_file", type=click.Path(path_type=Path),
              help="Nodes file: a JSON list of node records, or {\"nodes\": [...]} as `hypercore cluster metrics --json` "
                   "prints it.")
@click.option("--live", is_flag=True, help="Use the live cluster view of the agent at --addr.")
@click.option("--addr", envvar="HYPERCORE_ADDR", default="https://127.0.0.1:8001", show_default=True, help="Agent API address (with --live).")
@click.option("--ca-file", envvar="HYPERCORE_CACERT", type=click.Path(path_type=Path, dir_okay=False),
              help="Cluster CA certificate to check the agent against (with --live; env HYPERCORE_CACERT).")
@click.option("--token", envvar="HYPERCORE_TOKEN", default=None, help="User token (with --live; unused by /v1/nodes).")
@click.option("--near", help="With --live: latency as seen from this node (default: the agent at --addr).")
@click.option("--cpu", type=click.FloatRange(min=0.01, max=1024), default=None,
              help="Explain a spawn asking this many cores: nodes without that much free CPU are rejected "
                   "(with --live: as the agent decides that spawn; --mem defaults to 256, as for `cluster spawn`).")
@click.option("--mem", type=click.IntRange(min=1, max=16 * 1024 * 1024), default=None,
              help="Explain a spawn asking this many MB of memory (with --live, --cpu defaults to 1).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Show only the best N ranked nodes and the first N rejected (with counts of the rest).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@user_errors
def explain(policy_file: Path, nodes_file: Path | None, live: bool, addr: str, ca_file: Path | None, token: str | None,
            near: str | None, cpu: float | None, mem: int | None, limit: int | None, as_json: bool) -> None:
    """Show how POLICY ranks nodes: exit 0 if a node ranks, 2 on bad input, 3 if none qualifies.

    \b
    A nodes file (--nodes) holds node records: a JSON list, or {"nodes": [...]},
    each record a node's name, status and metrics, e.g.
      {"name": "n1", "status": "alive", "latency_ms": 12, "jitter_ms": 1.5,
       "packet_loss": 0, "price_per_gb": 0.02, "reputation": 0.95,
       "queue_depth": 3, "capabilities": ["gpu"]}
    (a metric left out is unknown). Save one from a running cluster with
      hypercore cluster metrics --json > nodes.json
    or ask the agent directly with --live.

    With --cpu/--mem, a node whose free CPU or memory cannot take the spawn is
    rejected ("insufficient cpu (free 0 of 2, asks 1)"), in every mode. With
    --live they make the agent decide as for `cluster spawn --command ...
    --cpu N --mem MB` (its dry run: a user token is needed), so the explain
    also counts what only the agent knows: placements the nodes' beacons do
    not show yet and the nodes it ejected as outliers.

    The ranking goes to stdout; errors and warnings go to stderr.
    """
    if (nodes_file is None) == (not live):
        raise click.UsageError("give exactly one of --nodes FILE or --live")
    # A one-shot command that may build millions of objects (100,000 node records) holding no cycles:
    # the cyclic collector would walk them again and again, and once more when re-enabled. Off for good.
    gc.disable()
    policy = load_policy_file(policy_file)
    _warn(policy_file, policy)
    asks = cpu is not None or mem is not None
    if live:
        check_regular(ca_file, "--ca-file")
        if asks:
            _explain_spawn(policy, addr, ca_file, token, near, cpu, mem, limit, as_json)
        from hypercore.api.client import fetch_node_records

        table = table_from_json(fetch_node_records(addr, token, ca_file, near), source=f"{addr}/v1/nodes")
    else:
        assert nodes_file is not None
        table = read_nodes_file(nodes_file)
    decision = decide(policy, table, require_resources=(cpu or 0.0, float(mem or 0)) if asks else None)
    regions = table.region_of()
    if as_json:
        out = decision.to_dict(limit)
        if regions:
            out["regions"] = regions
        print_json(out)
    else:
        print_decision(decision, Console(), limit, regions)
    raise SystemExit(0 if len(decision.ranked) else EXIT_NO_NODE)


def _explain_spawn(policy: Policy, addr: str, ca_file: Path | None, token: str | None, near: str | None,
                   cpu: float | None, mem: int | None, limit: int | None, as_json: bool) -> NoReturn:
    """Print the agent's own decision for a spawn of an exec workload asking `cpu` cores and `mem` MB."""
    if not token:
        raise click.UsageError("--live with --cpu/--mem asks the agent for the decision of that spawn (a dry run): "
                               "give a user token with --token or HYPERCORE_TOKEN")
    from hypercore.api.client import dry_run_decision

    spec = {"command": "true", "cpu": 1.0 if cpu is None else cpu, "mem": 256 if mem is None else mem}
    data = dry_run_decision(addr, token, ca_file, policy.model_dump(mode="json"), spec, near)
    ranked_total, rejected_total = len(data["ranked"]), len(data["rejected"])
    if limit is not None:
        data = {**data, "ranked": data["ranked"][:limit], "rejected": data["rejected"][:limit],
                "ranked_more": max(0, ranked_total - limit), "rejected_more": max(0, rejected_total - limit)}
    if as_json:
        print_json(data)
    else:
        reasons = data["summary"].partition(": ")[2].partition("; ")[0]  # "3 latency_ms > 100, 1 not alive"
        print_decision_data(data, Console(), reasons, ranked_total, rejected_total)
    raise SystemExit(0 if ranked_total else EXIT_NO_NODE)
