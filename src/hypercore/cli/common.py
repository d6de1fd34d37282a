"""What every hypercore command shares: error handling, exit codes, file reading, printing.

No input makes a command print a traceback: our errors become one line per
problem and an exit code, anything unexpected one `error:` line. Only regular
files are read (a FIFO or a device would hang the command), and text that
came from a user or a node is printed with control characters escaped.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from hypercore.errors import HypercoreError
from hypercore.policy.errors import PolicyError, Problem
from hypercore.policy.loader import not_regular, parse_json_strict, read_regular_file, with_locations
from hypercore.policy.node_columns import table_from_json
from hypercore.policy.nodes import NodeTable

EXIT_OK = 0
EXIT_INVALID = 1  # `policy validate`: a file is not a valid policy
EXIT_BAD_INPUT = 2  # usage errors and unreadable or malformed input
EXIT_NO_NODE = 3  # a decision in which no node qualifies
EXIT_NOT_PLACED = 4  # nodes qualified, but every attempt failed

MAX_INPUT_BYTES = 64 * 1024 * 1024

F = TypeVar("F", bound=Callable[..., Any])


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: Any) -> str:
    """`text` as one line a terminal shows literally: control, format and separator characters
    (ESC, newlines, bidi overrides, lone surrogates) become escapes such as \\x1b."""
    text = str(text)
    return text if text.isprintable() else "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print `error: message` (each line escaped) to stderr and exit with `code`."""
    lines = "\nerror: ".join(printable(line) for line in str(message).split("\n"))
    click.echo(f"error: {lines}", err=True)
    sys.exit(code)


def user_errors(func: F) -> F:
    """Turn HypercoreError into a clear message and exit code, and anything unexpected into one line: never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PolicyError as exc:
            fail("\n".join(printable(p) for p in exc.problems), getattr(exc, "exit_code", EXIT_BAD_INPUT))
        except HypercoreError as exc:
            fail(str(exc), getattr(exc, "exit_code", EXIT_BAD_INPUT))
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # a bug or an input nobody foresaw: say so in one line
            text = str(exc)
            fail(f"unexpected {type(exc).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}")

    return wrapper  # type: ignore[return-value]


def _read_text(path: Path) -> str:
    raw = read_regular_file(path, MAX_INPUT_BYTES, "an input file")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise PolicyError([Problem(str(path), "", "is not UTF-8 text")]) from None


def read_json_file(path: Path) -> Any:
    """Read a JSON input file (not a policy): a regular file only, clear errors, size-capped, strict."""
    return parse_json_strict(_read_text(path), str(path))


def read_nodes_file(path: Path) -> NodeTable:
    """The node table of a nodes file; each problem names its field and, where found, its line and column."""
    text = _read_text(path)
    try:
        return table_from_json(parse_json_strict(text, str(path)), source=str(path))
    except PolicyError as exc:
        raise PolicyError(with_locations(exc.problems, text)) from None


def read_secret_file(path: Path, option: str, limit: int = 64 * 1024) -> str:
    """The stripped UTF-8 text of a small regular file given with `option` (--token-file, --encrypt-file)."""
    try:
        raw = read_regular_file(path, limit, "this file")
        return raw.decode("utf-8").strip()
    except PolicyError as exc:
        raise click.BadParameter(printable(exc.problems[0]), param_hint=option) from None
    except UnicodeDecodeError:
        raise click.BadParameter(printable(f"{path}: is not UTF-8 text"), param_hint=option) from None


def check_regular(path: Path | None, option: str) -> None:
    """Refuse a FIFO, device or socket given as `option` before a library opens it (and hangs on it)."""
    if path is None:
        return
    try:
        why = not_regular(os.stat(path).st_mode)
    except (OSError, ValueError):
        return  # missing or unreadable: the reader says so
    if why:
        raise click.BadParameter(printable(f"{path}: {why}"), param_hint=option)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))
