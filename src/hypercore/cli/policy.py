"""`hypercore policy …`: schema, validate, explain."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from hypercore.cli.common import (
    EXIT_INVALID,
    EXIT_NO_NODE,
    check_regular,
    print_json,
    printable,
    read_json_file,
    user_errors,
)
from hypercore.cli.render import print_decision
from hypercore.policy import Policy, PolicyError, decide, load_policy_file, parse_node_records


@click.group("policy")
def policy_group() -> None:
    """Write, check and try placement policies."""


@policy_group.command("schema")
def schema() -> None:
    """Print the JSON Schema of a policy file."""
    print_json(Policy.model_json_schema())


@policy_group.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@user_errors
def validate(files: tuple[Path, ...]) -> None:
    """Check policy files: exit 0 when all are valid, 1 otherwise (one line per problem)."""
    bad = False
    for path in files:
        try:
            policy = load_policy_file(path)
        except PolicyError as exc:
            bad = True
            for problem in exc.problems:
                click.echo(printable(problem))
            continue
        shown = printable(path)
        for rule in policy.rules.zero_limits():
            click.echo(f"{shown}: rules.{rule}: warning: 0 is a literal zero limit, not 'no limit' (omit the rule for no limit)")
        click.echo(f"{shown}: ok (policy '{printable(policy.name)}', mode {policy.mode})")
    raise SystemExit(EXIT_INVALID if bad else 0)


@policy_group.command("explain")
@click.argument("policy_file", metavar="POLICY", type=click.Path(path_type=Path))
@click.option("--nodes", "nodes_file", type=click.Path(path_type=Path), help="JSON list of node records, or {\"nodes\": [...]}.")
@click.option("--live", is_flag=True, help="Use the live cluster view of the agent at --addr.")
@click.option("--addr", envvar="HYPERCORE_ADDR", default="https://127.0.0.1:8001", show_default=True, help="Agent API address (with --live).")
@click.option("--ca-file", envvar="HYPERCORE_CACERT", type=click.Path(path_type=Path, dir_okay=False),
              help="Cluster CA certificate to check the agent against (with --live; env HYPERCORE_CACERT).")
@click.option("--token", envvar="HYPERCORE_TOKEN", default=None, help="User token (with --live; unused by /v1/nodes).")
@click.option("--near", help="With --live: latency as seen from this node (default: the agent at --addr).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Show only the best N ranked nodes and the first N rejected (with counts of the rest).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@user_errors
def explain(policy_file: Path, nodes_file: Path | None, live: bool, addr: str, ca_file: Path | None, token: str | None,
            near: str | None, limit: int | None, as_json: bool) -> None:
    """Show how POLICY ranks nodes: exit 0 if a node ranks, 2 on bad input, 3 if none qualifies."""
    if (nodes_file is None) == (not live):
        raise click.UsageError("give exactly one of --nodes FILE or --live")
    policy = load_policy_file(policy_file)
    if live:
        check_regular(ca_file, "--ca-file")
        from hypercore.api.client import fetch_node_records

        records = parse_node_records(fetch_node_records(addr, token, ca_file, near), source=f"{addr}/v1/nodes")
    else:
        assert nodes_file is not None
        records = parse_node_records(read_json_file(nodes_file), source=str(nodes_file))
    decision = decide(policy, records)
    if as_json:
        print_json(decision.to_dict(limit))
    else:
        print_decision(decision, Console(), limit)
    raise SystemExit(0 if len(decision.ranked) else EXIT_NO_NODE)
