"""`hypercore cluster …`: run the node agent, and the client commands that talk to it."""

from __future__ import annotations

import asyncio
import functools
import re
import shlex
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hypercore.api.client import ApiClient, ApiClientError
from hypercore.config import agent_options
from hypercore.cli.common import (EXIT_NO_NODE, EXIT_NOT_PLACED, check_regular, fail, print_json, printable,
                                  read_secret_file, user_errors)
from hypercore.cli.workload_ids import resolve_id, short_id
from hypercore.policy import load_policy_file
from hypercore.workload import WorkloadSpec



class ClusterGroup(click.Group):
    """`hypercore cluster [FLAGS] [JOIN_ADDR...]` runs the agent; a subcommand name runs that."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _client_options(func: Any) -> Any:
    """--addr, --ca-file, --token and --token-file, folded into one `client` argument (an ApiClient)."""

    @functools.wraps(func)
    def wrapper(*args: Any, addr: str, ca_file: Path | None, token: str | None, token_file: Path | None, **kw: Any) -> Any:
        if token_file is not None:
            token = read_secret_file(token_file, "--token-file")
        check_regular(ca_file, "--ca-file")
        return func(*args, client=ApiClient(addr, token, ca_file=ca_file), **kw)

    wrapper = click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
                           help="Read the token from this file instead.")(wrapper)
    wrapper = click.option("--token", envvar="HYPERCORE_TOKEN", default=None,
                           help="User token from `hypercore token create` (env HYPERCORE_TOKEN).")(wrapper)
    wrapper = click.option("--ca-file", envvar="HYPERCORE_CACERT", type=click.Path(path_type=Path, dir_okay=False),
                           help="The cluster CA certificate that the agent's certificate is checked against "
                                "(env HYPERCORE_CACERT).")(wrapper)
    wrapper = click.option("--addr", envvar="HYPERCORE_ADDR", default="https://127.0.0.1:8001", show_default=True,
                           help="Agent API address (env HYPERCORE_ADDR).")(wrapper)
    return wrapper


@click.group("cluster", cls=ClusterGroup, short_help="Run a node agent, or talk to one.")
def cluster_group() -> None:
    """Run a node agent (`hypercore cluster [FLAGS] [JOIN_ADDR...]`, see `cluster run -h`) or talk to one."""


@cluster_group.command("run")
@agent_options
@click.option("--encrypt-file", type=click.Path(path_type=Path, dir_okay=False), help="Read the gossip key from this file.")
@click.option("--cluster-token", hidden=True, envvar="HYPERCORE_CLUSTER_TOKEN",
              help="Refused: nodes authenticate with certificates.")
@click.pass_context
@user_errors
def run(ctx: click.Context, encrypt_file: Path | None, cluster_token: str | None, **settings: Any) -> None:
    """Run this machine's node agent and join the cluster through JOIN_ADDR (retried until it answers)."""
    if cluster_token is not None:
        fail("the agent takes no token: a token on its command line (or in its environment) is readable by other "
             "local users in /proc. Nodes authenticate with --cert-file/--key-file; users' tokens come from "
             "`hypercore token create` and go to the CLI through HYPERCORE_TOKEN or --token-file")
    if settings.get("encrypt") is not None and ctx.get_parameter_source("encrypt") == click.core.ParameterSource.COMMANDLINE:
        fail("--encrypt on the command line is readable by every local user in /proc/PID/cmdline: "
             "set HYPERCORE_ENCRYPT or use --encrypt-file")
    if encrypt_file is not None:
        settings["encrypt"] = read_secret_file(encrypt_file, "--encrypt-file", limit=4096)
    from hypercore import logfmt
    from hypercore.agent import NodeAgent
    from hypercore.config import parse
    from hypercore.membership import find_serf_binary

    config = parse(settings)
    logfmt.setup(config.log_level)
    find_serf_binary()  # fail early, with the package to install
    asyncio.run(NodeAgent(config).run())


def _parse_env(values: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} must be KEY=VALUE", param_hint="--env")
        env[key] = value
    return env


# A node name as certificates hold them (hypercore.identity.pki.NODE_NAME_RE, not imported: it brings the
# cryptography package into every command); a name outside it cannot be a request id's home.
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}", re.ASCII)


def _home_request_id(client: ApiClient) -> str:
    """A new request id that names the node asked as its home (`<uuid>@<node>`): that node places it itself,
    where an id without one goes to an owner its hash picks, most often another node, maybe in another region
    (docs/placement-protocol.md, "Home"). Plain when the node cannot say its name."""
    try:
        node = client.request("GET", "/v1/ping").get("node")
    except (ApiClientError, AttributeError):
        node = None
    fresh = str(uuid.uuid4())
    return f"{fresh}@{node}" if isinstance(node, str) and _NODE_NAME.fullmatch(node) else fresh


def _post_spawn(client: ApiClient, body: dict[str, Any], home_made: bool) -> Any:
    """POST the spawn; an agent from before request ids named their home (beacon protocol 3) refuses a made
    `<uuid>@<node>` id (422, before anything is placed): then the same request once more, the id without it."""
    try:
        return client.request("POST", "/v1/workloads", json=body)
    except ApiClientError as exc:
        rid = body["request_id"]
        if not (home_made and exc.status == 422 and "@" in rid and "request_id" in str(exc)):
            raise
        return client.request("POST", "/v1/workloads", json={**body, "request_id": rid.split("@", 1)[0]})


@cluster_group.command("spawn")
@click.option("--command", "command", help="Shell command to run (needs a node with --enable-exec).")
@click.option("--image-ref", help="Image to run (must be on the node): as a container, or with --runtime vm as a microVM.")
@click.option("--runtime", type=click.Choice(["container", "vm"]), default=None,
              help="How an --image-ref runs: container (default) or vm, its own microVM (needs a node with --enable-vm).")
@click.option("--cpu", type=float, default=1.0, show_default=True)
@click.option("--mem", type=int, default=256, show_default=True, help="Memory in MB.")
@click.option("--ports", default="", help="HOST:CONTAINER mappings, comma-separated.")
@click.option("--env", multiple=True, help="KEY=VALUE, repeatable.")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path), help="Policy file for this spawn (read here, sent inline).")
@click.option("--request-id", help="Idempotency key, sent as given; ID@NODE names NODE as the node that places it "
                                    "(default: a new UUID naming the node asked, as UUID@NODE).")
@click.option("--near", help="Measure latency from this node (default: the node at --addr).")
@click.option("--dry-run", is_flag=True, help="Show the placement decision; start nothing.")
@click.option("--json", "as_json", is_flag=True)
@_client_options
@user_errors
def spawn(command: str | None, image_ref: str | None, runtime: str | None, cpu: float, mem: int, ports: str, env: tuple[str, ...],
          policy_file: Path | None, request_id: str | None, near: str | None, dry_run: bool, as_json: bool,
          client: ApiClient) -> None:
    """Place a workload with the policy and start it on the chosen node."""
    if (command is None) == (image_ref is None):
        raise click.UsageError("give exactly one of --command or --image-ref")
    from pydantic import ValidationError

    try:
        spec = WorkloadSpec(command=command, image_ref=image_ref, runtime=runtime, cpu=cpu, mem=mem,
                            ports=[p.strip() for p in ports.split(",") if p.strip()], env=_parse_env(env))
    except ValidationError as exc:
        fail("; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-') or 'spec'}: {e['msg'].removeprefix('Value error, ')}"
                      for e in exc.errors()))
    body: dict[str, Any] = {"spec": spec.model_dump(mode="json", exclude_none=True), "dry_run": dry_run,
                            "request_id": request_id or (str(uuid.uuid4()) if dry_run else _home_request_id(client))}
    if near is not None:
        body["near"] = near
    if policy_file is not None:
        body["policy"] = load_policy_file(policy_file).model_dump(mode="json")
    try:
        result = _post_spawn(client, body, home_made=request_id is None)
    except ApiClientError as exc:
        decision = exc.body.get("error", {}).get("decision")
        if exc.status == 409 and decision is not None:
            if as_json:
                print_json({"id": None, "node": None, "decision": decision, "error": str(exc)})
            fail(decision["summary"], EXIT_NO_NODE)
        if exc.status == 503:
            fail(str(exc), EXIT_NOT_PLACED)
        raise
    if as_json:
        print_json({"id": result.get("id"), "node": result.get("node"), "decision": result["decision"], "attempts": result.get("attempts", [])})
        return
    d = result["decision"]
    if dry_run:
        click.echo(f"dry run: would place on {printable(result.get('node'))} — {printable(d['summary'])}")
    else:
        click.echo(f"spawned {printable(result['id'])} on {printable(result['node'])} (policy '{printable(d['policy'])}')")
        click.echo(printable(d["summary"]))
    for a in result.get("attempts", []):
        if a["outcome"] != "ok":
            click.echo(f"  tried {printable(a['node'])}: {printable(a['outcome'])} ({printable(a['detail'])})")


LIST_PAGE = 1000  # workloads per request when the whole list is read
NODES_PER_LISTING = 100  # the API's limit on `GET /v1/workloads?nodes=` (hypercore.api.paging.MAX_NODES)


def _list_pages(client: ApiClient, limit: int | None, after: str | None) -> dict[str, Any]:
    """One page (`limit`), every page after `after` read LIST_PAGE at a time, or (neither) the whole list in one
    answer: {workloads, unreachable, next}."""
    if limit is None and after is None:
        return client.request("GET", "/v1/workloads")
    workloads: list[dict[str, Any]] = []
    unreachable: dict[str, str] = {}
    while True:
        size = limit if limit is not None else LIST_PAGE
        result = client.request("GET", f"/v1/workloads?limit={size}" + (f"&after={quote(after, safe='')}" if after else ""))
        workloads.extend(result["workloads"])
        unreachable.update(result.get("unreachable", {}))
        after = result.get("next")
        if limit is not None or not after:
            return {"workloads": workloads, "unreachable": unreachable, "next": after}


@cluster_group.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=None,
              help="Show one page of at most N workloads, and the --after cursor of the next page.")
@click.option("--after", help="Start after this cursor (printed by `list --limit`).")
@click.option("--json", "as_json", is_flag=True)
@_client_options
@user_errors
def list_(limit: int | None, after: str | None, as_json: bool, client: ApiClient) -> None:
    """List the workloads of every alive node, oldest first (ids shortened to 8 characters; --json has full ids)."""
    result = _list_pages(client, limit, after)
    workloads = [{"id": w["id"], "node": w["node"], "state": w["state"], "spec": w["spec"],
                  "exit_code": w.get("exit_code")} for w in result["workloads"]]
    if as_json:
        print_json({"workloads": workloads, "unreachable": result.get("unreachable", {}),
                    **({"next": result["next"]} if limit is not None else {})})
        return
    table = Table()
    for col in ("id", "node", "state", "workload"):
        table.add_column(col)
    for w in workloads:
        spec = w["spec"]
        table.add_row(*(Text(printable(v)) for v in (short_id(w["id"]), w["node"], w["state"],
                                                     spec.get("command") or spec.get("image_ref") or "")))
    Console().print(table)
    for node, err in result.get("unreachable", {}).items():
        click.echo(f"warning: node {printable(node)} did not answer: {printable(err)}", err=True)
    if result.get("next"):
        click.echo(f"more: hypercore cluster list --limit {limit} --after {printable(result['next'])}", err=True)


@cluster_group.command("stop")
@click.option("--id", "workload_id", required=True, help="Workload id, or a unique prefix of it (at least 4 characters).")
@click.option("--json", "as_json", is_flag=True)
@_client_options
@user_errors
def stop(workload_id: str, as_json: bool, client: ApiClient) -> None:
    """Stop a workload (idempotent)."""
    result = client.request("DELETE", f"/v1/workloads/{resolve_id(client, workload_id)}")
    if as_json:
        print_json(result)
    else:
        click.echo(f"{printable(result['id'])} on {printable(result['node'])}: {printable(result['state'])}")


@cluster_group.command("remove")
@click.option("--id", "workload_id", required=True, help="Workload id, or a unique prefix of it (at least 4 characters).")
@_client_options
@user_errors
def remove(workload_id: str, client: ApiClient) -> None:
    """Forget a finished workload: its record, logs and container."""
    result = client.request("POST", f"/v1/workloads/{resolve_id(client, workload_id)}/remove")
    click.echo(f"{printable(result['id'])} on {printable(result['node'])}: removed")


@cluster_group.command("logs")
@click.option("--id", "workload_id", required=True, help="Workload id, or a unique prefix of it (at least 4 characters).")
@click.option("--tail", type=click.IntRange(min=1), default=None,
              help="Only the last N lines (a whole log is capped at the node's --max-log-mb).")
@_client_options
@user_errors
def logs(workload_id: str, tail: int | None, client: ApiClient) -> None:
    """Print a workload's output (also after it finished)."""
    query = f"?tail={tail}" if tail else ""
    workload_id = resolve_id(client, workload_id)
    sys.stdout.write(client.request("GET", f"/v1/workloads/{workload_id}/logs{query}", text=True))


@cluster_group.command("metrics")
@click.option("--json", "as_json", is_flag=True, help="{\"nodes\": [...]} — feed it to `policy explain --nodes`.")
@click.option("--near", help="Latency, jitter and loss as seen from this node (default: the node at --addr).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=None,
              help="At most N nodes, in name order (default: all); the last line says how to ask for the next page.")
@click.option("--after", metavar="NAME", help="Only nodes whose name sorts after NAME (the next page's cursor).")
@_client_options
@user_errors
def metrics(as_json: bool, near: str | None, limit: int | None, after: str | None, client: ApiClient) -> None:
    """Show every node as the node at --addr sees it: links measured from there, reputation from evidence."""
    query = urlencode({k: v for k, v in (("near", near), ("limit", limit), ("after", after)) if v is not None})
    answer = client.request("GET", "/v1/nodes" + (f"?{query}" if query else ""))
    nodes, total, cursor = answer["nodes"], answer.get("total", len(answer["nodes"])), answer.get("next")
    counts: dict[str, int | None] = {str(n["name"]): 0 for n in nodes}
    # A page of nodes counts its own nodes' workloads only (one request to each of them, in groups of
    # NODES_PER_LISTING), not the whole cluster's listing (a request to every node). A node whose listing
    # did not come (unreachable, or a name the filter refuses) shows as unknown, not as 0.
    names = list(counts)
    groups = [names[i:i + NODES_PER_LISTING] for i in range(0, len(names), NODES_PER_LISTING)] if limit else [None]
    for group in groups:
        path = "/v1/workloads" + (f"?{urlencode({'nodes': ','.join(group)})}" if group is not None else "")
        try:
            listing = client.request("GET", path)
        except ApiClientError:
            counts.update(dict.fromkeys(group if group is not None else names))
            continue
        for w in listing["workloads"]:
            if w["state"] in ("pending", "running") and (count := counts.get(w["node"])) is not None:
                counts[w["node"]] = count + 1
        counts.update(dict.fromkeys(listing.get("unreachable") or {}))
    for n in nodes:
        n["workloads"] = counts.get(str(n["name"]))
    if as_json:
        print_json({"nodes": nodes, "total": total, "next": cursor})
        return
    # The per-node block of the spec's testing guide. Everything a node published is printed escaped.
    def fmt(v: Any, unit: str = "") -> str:
        if v is None:
            return "unknown"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return printable(repr(v))
        try:
            return f"{float(v):g}{unit}"
        except OverflowError:
            return "out of range"

    for n in nodes:
        click.echo(f"Node: {printable(n['name'])} ({printable(n['status'])})")
        click.echo(f"  Region:       {printable(n.get('region') or 'none')}")
        click.echo(f"  Beacon ID:    {printable(n.get('beacon_id') or 'no beacon data')}"
                   + (f" ({printable(n['problem'])})" if n.get("problem") else ""))
        source = f" (from {printable(str(n['link_source']))})" if n.get("link_source") else ""
        click.echo(f"  Latency:      {fmt(n['latency_ms'], ' ms')}{source}")
        click.echo(f"  Jitter:       {fmt(n['jitter_ms'], ' ms')}")
        click.echo(f"  Packet Loss:  {fmt(n['packet_loss'], '%')}")
        age = n.get("age_s")
        published = f" (published {fmt(age, ' s')} ago)" if isinstance(age, (int, float)) and n["queue_depth"] is not None else ""
        click.echo(f"  Queue Depth:  {fmt(n['queue_depth'])}{published}")
        click.echo(f"  Price/GB:     {fmt(n['price_per_gb'])}")
        ev = n.get("reputation_evidence")
        try:
            evidence = (f" ({int(ev['ok'])} ok, {int(ev['failed'])} failed, {int(ev['observers'])} observers, "
                        f"prior {float(ev['prior']):g})") if isinstance(ev, dict) else ""
        except (KeyError, TypeError, ValueError, OverflowError):
            evidence = ""
        click.echo(f"  Reputation:   {fmt(n['reputation'])}{evidence}")
        click.echo(f"  Capabilities: {printable(', '.join(map(str, n['capabilities'] or [])) or 'none')}")
        click.echo(f"  Workloads:    {fmt(n['workloads'])}")
        click.echo("")
    if limit is not None or after is not None:
        click.echo(f"{len(nodes)} of {printable(total)} nodes shown"
                   + (f"; next page: --after {shlex.quote(printable(cursor))}" if cursor is not None else "; no more"))
