"""Human-readable rendering of decisions (rich tables)."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from hypercore.policy.decision import COMPONENTS, Decision


def print_decision(decision: Decision, console: Console, limit: int | None = None) -> None:
    title = f"policy '{decision.policy}' ({decision.mode})"
    if decision.fallback:
        title += " — permissive fallback: no node passed the rules"
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("node")
    table.add_column("score", justify="right")
    for name in COMPONENTS:
        table.add_column(name, justify="right")
    ranked = decision.ranked if limit is None else decision.ranked[:limit]
    for i, r in enumerate(ranked, 1):
        table.add_row(str(i), r.node, f"{r.score:.4f}", *(f"{r.components[c]:.4f}" for c in COMPONENTS))
    if len(ranked):
        console.print(table)
        if limit is not None and len(decision.ranked) > limit:
            console.print(f"... and {len(decision.ranked) - limit} more ranked nodes")
    else:
        console.print(f"{title}: no node ranked")
    if decision.rejected:
        rejected = Table(title="rejected", title_justify="left")
        rejected.add_column("node")
        rejected.add_column("reasons")
        for r in decision.rejected:
            rejected.add_row(r.node, "; ".join(r.reasons))
        console.print(rejected)
    # Plain echo: the summary is one line that people grep, never wrapped.
    click.echo(decision.summary)
