"""Human-readable rendering of decisions (rich tables).

Node and policy names come from users and nodes: every such string goes to
rich as a Text (never parsed as markup, so `rack[red]-1` shows as written)
after `printable` escaped its control characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hypercore.cli.common import printable
from hypercore.policy.decision import Decision


def literal(value: object) -> Text:
    """A table cell or title that shows `value` as written: no markup, control characters escaped."""
    return Text(printable(value))


def print_decision(decision: Decision, console: Console, limit: int | None = None,
                   regions: Mapping[str, str] | None = None) -> None:
    """A decision of the engine, its lists capped at `limit` (the counts of the rest said)."""
    reasons = ", ".join(f"{n:,} {label}" for label, n in decision.reason_counts)
    print_decision_data(decision.to_dict(limit), console, reasons, len(decision.ranked), decision.rejected_count,
                        regions)


def print_decision_data(data: dict[str, Any], console: Console, reasons: str, ranked_total: int,
                        rejected_total: int, regions: Mapping[str, str] | None = None) -> None:
    """A decision in its JSON form (Decision.to_dict, or an agent's dry run): the ranked table with one
    column per score component, the rejected nodes with their reasons, how many more of each there
    are (`reasons`: the reason counts, for the rejected left out), and the summary. `regions` (node →
    region): a region column, when any node has one."""
    title = f"policy '{printable(data['policy'])}' ({data['mode']})"
    if data["fallback"]:
        title += " — permissive fallback: no node passed the rules"
    table = Table(title=Text(title), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("node")
    if regions:
        table.add_column("region")
    table.add_column("score", justify="right")
    ranked = data["ranked"]
    components = list(ranked[0]["components"]) if ranked else []  # one column per score component
    for name in components:
        table.add_column(name, justify="right")
    for i, r in enumerate(ranked, 1):
        where = [literal(regions.get(r["node"], "-"))] if regions else []
        table.add_row(str(i), literal(r["node"]), *where, f"{r['score']:.4f}",
                      *(f"{r['components'][c]:.4f}" for c in components))
    if ranked:
        console.print(table)
        if ranked_total > len(ranked):
            console.print(f"... and {ranked_total - len(ranked)} more ranked nodes")
    else:
        console.print(Text(f"{title}: no node ranked"))
    if data["rejected"]:
        rejected = Table(title="rejected", title_justify="left")
        rejected.add_column("node")
        if regions:
            rejected.add_column("region")
        rejected.add_column("reasons")
        for r in data["rejected"]:
            where = [literal(regions.get(r["node"], "-"))] if regions else []
            rejected.add_row(literal(r["node"]), *where, literal("; ".join(r["reasons"])))
        console.print(rejected)
        if rejected_total > len(data["rejected"]):
            click.echo(printable(f"… and {rejected_total - len(data['rejected']):,} more rejected: {reasons}"))
    # Plain echo: the summary is one line that people grep, never wrapped.
    click.echo(printable(data["summary"]))
