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

from hypercore.cli.common import printable
from hypercore.policy.decision import Decision


def literal(value: object) -> Text:
    """A table cell or title that shows `value` as written: no markup, control characters escaped."""
    return Text(printable(value))


def print_decision(decision: Decision, console: Console, limit: int | None = None) -> None:
    title = f"policy '{printable(decision.policy)}' ({decision.mode})"
    if decision.fallback:
        title += " — permissive fallback: no node passed the rules"
    table = Table(title=Text(title), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("node")
    table.add_column("score", justify="right")
    components = decision.ranked.components  # one column per score component of the policy's metrics
    for name in components:
        table.add_column(name, justify="right")
    ranked = decision.ranked if limit is None else decision.ranked[:limit]
    for i, r in enumerate(ranked, 1):
        table.add_row(str(i), literal(r.node), f"{r.score:.4f}", *(f"{r.components[c]:.4f}" for c in components))
    if len(ranked):
        console.print(table)
        if limit is not None and len(decision.ranked) > limit:
            console.print(f"... and {len(decision.ranked) - limit} more ranked nodes")
    else:
        console.print(Text(f"{title}: no node ranked"))
    if decision.rejected_count:
        rejected = Table(title="rejected", title_justify="left")
        rejected.add_column("node")
        rejected.add_column("reasons")
        for r in decision.rejected_first(limit):
            rejected.add_row(literal(r.node), literal("; ".join(r.reasons)))
        console.print(rejected)
        if limit is not None and decision.rejected_count > limit:
            reasons = ", ".join(f"{n:,} {label}" for label, n in decision.reason_counts)
            click.echo(printable(f"… and {decision.rejected_count - limit:,} more rejected: {reasons}"))
    # Plain echo: the summary is one line that people grep, never wrapped.
    click.echo(printable(decision.summary))
