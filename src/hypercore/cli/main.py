"""Entry point of the `hypercore` command."""

from __future__ import annotations

import click

from hypercore import __version__
from hypercore.cli.cluster import cluster_group
from hypercore.cli.dev import dev_group
from hypercore.cli.identity import keygen_command, tls_group, token_group
from hypercore.cli.node import node_group
from hypercore.cli.policy import policy_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="hypercore")
def cli() -> None:
    """Policy-driven workload placement for decentralized compute clusters."""


@cli.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash:  eval "$(hypercore completion bash)"     (in ~/.bashrc)
    zsh:   eval "$(hypercore completion zsh)"      (in ~/.zshrc)
    fish:  hypercore completion fish > ~/.config/fish/completions/hypercore.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "hypercore", "_HYPERCORE_COMPLETE").source())


cli.add_command(policy_group)
cli.add_command(cluster_group)
cli.add_command(tls_group)
cli.add_command(token_group)
cli.add_command(keygen_command)
cli.add_command(node_group)
cli.add_command(dev_group)


def main() -> None:
    cli(prog_name="hypercore")
