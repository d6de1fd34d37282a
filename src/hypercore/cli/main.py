"""Entry point of the `hypercore` command."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import click

from hypercore import __version__
from hypercore.cli.policy import policy_group

# Commands imported only when run, listed or looked up: `cluster` brings the HTTP client and the agent's
# settings, `node` the runtimes, `tls`/`token`/`keygen` the cryptography package; together about a
# tenth of a second that `policy explain` need not wait for.
_LAZY = {
    "cluster": "hypercore.cli.cluster:cluster_group",
    "node": "hypercore.cli.node:node_group",
    "tls": "hypercore.cli.identity:tls_group",
    "token": "hypercore.cli.identity:token_group",
    "keygen": "hypercore.cli.identity:keygen_command",
    "dev": "hypercore.cli.dev:dev_group",
}


class _LazyCommands(dict):  # type: ignore[type-arg]
    """The group's name -> command map; a command of _LAZY is imported when first looked up."""

    def __missing__(self, name: str) -> click.Command:
        if name not in _LAZY:
            raise KeyError(name)
        module, _, attr = _LAZY[name].partition(":")
        command = self[name] = getattr(importlib.import_module(module), attr)
        return command

    def get(self, name: str, default: Any = None) -> Any:  # click's Group.get_command uses get()
        try:
            return self[name]
        except KeyError:
            return default

    def __iter__(self) -> Iterator[str]:  # every name, imported or not
        return iter(sorted({*super().__iter__(), *_LAZY}))

    def __contains__(self, name: object) -> bool:
        return name in _LAZY or super().__contains__(name)


class _Commands(click.Group):
    """A group whose commands in _LAZY are imported on first use (click's documented "lazy group")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _LazyCommands(self.commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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


def main() -> None:
    cli(prog_name="hypercore")
