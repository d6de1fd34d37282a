"""The `hypercore …` commands the guide and the README show still parse: every subcommand and flag exists.

Each command line of their ```sh blocks (and each `$ hypercore …` line of the guide's
captured transcripts) goes through click's own parser (make_context: subcommands,
flags, option types and choices, required options) without running anything. The
guide's blocks of output come from scripts/capture_guide.py, which runs the commands
for real; this test is the cheap check that a renamed flag did not leave them stale.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest

from hypercore.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", ")"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def command_lines(doc: Path) -> list[str]:
    """The `hypercore …` command lines of `doc`: in ```sh blocks, and after `$ ` in output blocks."""
    found = []
    for lang, body in FENCE.findall(doc.read_text()):
        for line in body.replace("\\\n", " ").splitlines():  # a line that ends in \ goes on on the next
            line = line.strip()
            if lang == "sh" and line.startswith("hypercore "):
                found.append(line)
            elif line.startswith("$ hypercore ") or line.startswith(">   hypercore "):
                found.append(line.split("hypercore ", 1)[1].join(["hypercore ", ""]))
    return found


def words(line: str) -> list[str]:
    """The arguments after `hypercore`, up to the first shell operator; comments dropped."""
    line = re.sub(r"<([\w-]+)>", r"\1", line)  # placeholders such as <id> are words, not redirections
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out = []
    for token in lexer:
        if token in SHELL_OPERATORS:
            break
        out.append(token)
    assert out and out[0] == "hypercore", line
    return out[1:]


def parse(args: list[str]) -> click.Command:
    """Parse `args` as the `hypercore` command would, down to the command that would run; return it."""
    cmd: click.Command = cli
    ctx = cli.make_context("hypercore", list(args))
    while isinstance(cmd, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        cmd = sub
    return cmd


CASES = [(doc.relative_to(ROOT).as_posix(), line) for doc in DOCS for line in command_lines(doc)]


def test_the_guide_and_readme_have_commands_to_check() -> None:
    by_doc = {doc for doc, _ in CASES}
    assert {"README.md", "docs/guide.md"} <= by_doc
    assert sum(doc == "docs/guide.md" for doc, _ in CASES) >= 20


@pytest.mark.parametrize(("doc", "line"), CASES, ids=[f"{d}:{line[:60]}" for d, line in CASES])
def test_each_documented_command_parses(doc: str, line: str) -> None:
    try:
        parse(words(line))
    except click.exceptions.Exit:  # -V, --help: they answer and stop, as they should
        pass
    except click.ClickException as exc:
        pytest.fail(f"{doc}: `{line}` does not parse: {exc.format_message()}")


def test_a_stale_flag_would_be_caught() -> None:
    with pytest.raises(click.NoSuchOption):
        parse(words("hypercore cluster metrics --no-such-flag"))
    with pytest.raises(click.UsageError):
        parse(words("hypercore cluster stop"))  # --id is required


def test_the_guides_ultra_strict_policy_is_the_one_captured() -> None:
    from scripts.capture_guide import ULTRA_STRICT

    guide = (ROOT / "docs" / "guide.md").read_text()
    shown = [json.loads(body) for lang, body in FENCE.findall(guide) if lang == "json" and "ultra-strict" in body]
    assert shown == [ULTRA_STRICT]
