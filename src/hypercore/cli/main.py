"""Entry point of the `hypercore` command."""

from __future__ import annotations

import click

from hypercore import __version__
from hypercore.cli.cluster import cluster_group
from hypercore.cli.identity import keygen_command, tls_group, token_group
from hypercore.cli.node import node_group
from hypercore.cli.policy import policy_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hypercore")
def cli() -> None:
    """Policy-driven workload placement for decentralized compute clusters."""


cli.add_command(policy_group)
cli.add_command(cluster_group)
cli.add_command(tls_group)
cli.add_command(token_group)
cli.add_command(keygen_command)
cli.add_command(node_group)


def main() -> None:
    cli(prog_name="hypercore")
