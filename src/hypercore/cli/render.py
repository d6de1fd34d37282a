"""Human-readable rendering of decisions (rich tables).

Node and policy names come from users and nodes: every such string goes to
rich as a Text (never parsed as markup, so `rack[red]-1` shows as written)
after `printable` escaped its control characters.
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from collections.abc import Mapping

from hypercore.cli.common import printable
from hypercore.policy.decision import COMPONENTS, Decision


def literal(value: object) -> Text:
    """A table cell or title that shows `value` as written: no markup, control characters escaped."""
    return Text(printable(value))


def print_decision(decision: Decision, console: Console, limit: int | None = None,
                   regions: Mapping[str, str | None] | None = None) -> None:
    """The ranking and the rejections; `regions` (node → region): a region column, when any node has one."""
    regions = regions if regions and any(regions.values()) else None
    title = f"policy '{printable(decision.policy)}' ({decision.mode})"
    if decision.fallback:
        title += " — permissive fallback: no node passed the rules"
    table = Table(title=Text(title), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("node")
    if regions:
        table.add_column("region")
    table.add_column("score", justify="right")
    for name in COMPONENTS:
        table.add_column(name, justify="right")
    ranked = decision.ranked if limit is None else decision.ranked[:limit]
    for i, r in enumerate(ranked, 1):
        where = [literal(regions.get(r.node) or "-")] if regions else []
        table.add_row(str(i), literal(r.node), *where, f"{r.score:.4f}", *(f"{r.components[c]:.4f}" for c in COMPONENTS))
    if len(ranked):
        console.print(table)
        if limit is not None and len(decision.ranked) > limit:
            console.print(f"... and {len(decision.ranked) - limit} more ranked nodes")
    else:
        console.print(Text(f"{title}: no node ranked"))
    if decision.rejected_count:
        rejected = Table(title="rejected", title_justify="left")
        rejected.add_column("node")
        if regions:
            rejected.add_column("region")
        rejected.add_column("reasons")
        for r in decision.rejected_first(limit):
            where = [literal(regions.get(r.node) or "-")] if regions else []
            rejected.add_row(literal(r.node), *where, literal("; ".join(r.reasons)))
        console.print(rejected)
        if limit is not None and decision.rejected_count > limit:
            reasons = ", ".join(f"{n:,} {label}" for label, n in decision.reason_counts)
            click.echo(printable(f"… and {decision.rejected_count - limit:,} more rejected: {reasons}"))
    # Plain echo: the summary is one line that people grep, never wrapped.
    click.echo(printable(decision.summary))
