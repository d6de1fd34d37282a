"""`hypercore tls …`, `hypercore keygen`, `hypercore token …`: the operator's identity commands.

These run where the cluster CA key lives (the operator's machine), never on
the nodes: nodes only ever get ca.pem, their own certificate and key, and the
gossip key.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import click

from hypercore.cli.common import check_regular, user_errors
from hypercore.identity.pki import CA_CERT_NAME, CA_KEY_NAME, MAX_DAYS, IdentityError, create_ca, create_node_cert
from hypercore.identity.tokens import create_token, parse_ttl

_DIR = click.Path(path_type=Path, file_okay=False)


def _check_ca_files(ca_dir: Path) -> None:
    """Refuse a ca.pem or ca-key.pem that is a FIFO or a device (reading it would hang) before the CA reads it."""
    for name in (CA_CERT_NAME, CA_KEY_NAME):
        check_regular(ca_dir / name, "--ca-dir")


@click.group("tls", short_help="Create the cluster CA and node certificates.")
def tls_group() -> None:
    """Create the cluster CA and node certificates (mutual TLS between nodes)."""


@tls_group.group("ca")
def ca_group() -> None:
    """The cluster CA: one per cluster, its key kept by the operator."""


@ca_group.command("create")
@click.option("--dir", "dir_", type=_DIR, required=True, help="Directory for ca.pem and ca-key.pem (made 0700).")
@click.option("--days", type=click.IntRange(1, MAX_DAYS), default=3650, show_default=True, help="Validity in days.")
@click.option("--force", is_flag=True, help="Replace an existing CA (its certificates and tokens stop working).")
@user_errors
def ca_create(dir_: Path, days: int, force: bool) -> None:
    """Create a new cluster CA; prints the paths of the certificate and the key."""
    cert, key = create_ca(dir_, days=days, force=force)
    click.echo(str(cert))
    click.echo(str(key))
    click.echo(f"copy {cert.name} to every node; keep {key.name} off the nodes, it signs certificates and tokens",
               err=True)


@tls_group.group("cert")
def cert_group() -> None:
    """Node certificates, signed by the cluster CA."""


@cert_group.command("create")
@click.option("--ca-dir", type=_DIR, required=True, help="Directory holding ca.pem and ca-key.pem.")
@click.option("--node", required=True, help="Node name (the node's --node-name); becomes the certificate's DNS name.")
@click.option("--ip", "ips", multiple=True, help="An IP address the node is reached at, repeatable.")
@click.option("--days", type=click.IntRange(1, MAX_DAYS), default=365, show_default=True, help="Validity in days.")
@click.option("--out", "out_dir", type=_DIR, required=True, help="Directory for NODE.pem and NODE-key.pem.")
@click.option("--reputation", type=click.FloatRange(0, 1), default=None,
              help="The prior reputation you attest for this node (0..1), e.g. after an audit; "
                   "without it the node starts from the cluster's default prior (0.5).")
@user_errors
def cert_create(ca_dir: Path, node: str, ips: tuple[str, ...], days: int, out_dir: Path,
                reputation: float | None) -> None:
    """Issue a certificate for one node; prints the paths of the certificate and the key."""
    _check_ca_files(ca_dir)
    cert, key = create_node_cert(ca_dir, node, out_dir, ips=ips, days=days, reputation=reputation)
    click.echo(str(cert))
    click.echo(str(key))


@click.command("keygen", short_help="Print a new gossip encryption key.")
def keygen_command() -> None:
    """Print a new gossip encryption key (base64 of 32 random bytes) for --encrypt."""
    click.echo(base64.b64encode(secrets.token_bytes(32)).decode("ascii"))


def _ttl(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_ttl(value)
    except IdentityError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@click.group("token")
def token_group() -> None:
    """User bearer tokens, signed by the cluster CA key."""


@token_group.command("create")
@click.option("--ca-dir", type=_DIR, required=True, help="Directory holding ca.pem and ca-key.pem.")
@click.option("--name", required=True, help="User name the token speaks for.")
@click.option("--ttl", "ttl_seconds", default="720h", show_default=True, callback=_ttl,
              help="Lifetime: 45s, 90m, 720h, 30d or plain seconds; at most 10 years.")
@click.option("--management", is_flag=True, help="Allow changing the cluster itself, not only using it.")
@user_errors
def token_create(ca_dir: Path, name: str, ttl_seconds: int, management: bool) -> None:
    """Print a new token (and nothing else, so that `$(hypercore token create …)` works)."""
    _check_ca_files(ca_dir)
    click.echo(create_token(ca_dir, name, ttl_seconds=ttl_seconds, management=management))
