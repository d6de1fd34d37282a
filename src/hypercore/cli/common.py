"""What every hypercore command shares: error handling, exit codes, JSON reading."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from hypercore.errors import HypercoreError
from hypercore.policy.errors import PolicyError, Problem
from hypercore.policy.loader import parse_json_strict

EXIT_OK = 0
EXIT_INVALID = 1  # `policy validate`: a file is not a valid policy
EXIT_BAD_INPUT = 2  # usage errors and unreadable or malformed input
EXIT_NO_NODE = 3  # a decision in which no node qualifies
EXIT_NOT_PLACED = 4  # nodes qualified, but every attempt failed

MAX_INPUT_BYTES = 64 * 1024 * 1024

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def user_errors(func: F) -> F:
    """Turn HypercoreError into a clear message and exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HypercoreError as exc:
            fail(str(exc).replace("\n", "\nerror: "), getattr(exc, "exit_code", EXIT_BAD_INPUT))

    return wrapper  # type: ignore[return-value]


def read_json_file(path: Path) -> Any:
    """Read a JSON input file (not a policy): clear errors, size-capped, strict."""
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise PolicyError([Problem(source, "", f"is {size} bytes; at most {MAX_INPUT_BYTES} are read")])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError([Problem(source, "", "no such file")]) from None
    except IsADirectoryError:
        raise PolicyError([Problem(source, "", "is a directory")]) from None
    except UnicodeDecodeError:
        raise PolicyError([Problem(source, "", "is not UTF-8 text")]) from None
    except OSError as exc:
        raise PolicyError([Problem(source, "", f"cannot be read: {exc.strerror or exc}")]) from None
    return parse_json_strict(text, source)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))
