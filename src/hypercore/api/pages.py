"""Keyset paging of a list answer: `?limit=N&after=KEY`, with the total and the next page's cursor.

A page is the first `limit` items whose key sorts after `after` (no `after`:
from the start). The cursor is a key, not an offset, so a member that joins
or leaves between two calls neither repeats nor skips any other item. The
answer says how many items there are in all (`total`) and the cursor of the
next page (`next`: the last key of this page, or null when nothing follows).
Without `limit` the answer is the whole list, as before paging existed.

The parameters arrive as text and are checked here, so that a bad one is
refused with the parameter, the value and what is allowed (422), not with a
generic parse error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from hypercore.api.errors import ApiError

T = TypeVar("T")

MAX_LIMIT = 10_000
MAX_CURSOR_CHARS = 253  # a member name is at most a DNS name's length


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    next: str | None


def checked_limit(raw: str | None) -> int | None:
    """`?limit=` as a number from 1 to MAX_LIMIT, or None when absent."""
    if raw is None:
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise ApiError(422, "invalid_request",
                       f"limit: {raw[:40]!r} is not allowed (a whole number from 1 to {MAX_LIMIT:,})")
    return int(text)


def checked_after(raw: str | None) -> str | None:
    """`?after=` as a cursor (the `next` of an earlier page), or None when absent."""
    if raw is None:
        return None
    if not raw or len(raw) > MAX_CURSOR_CHARS:
        raise ApiError(422, "invalid_request", f"after: a cursor of {len(raw)} characters is not allowed "
                                               f"(1 to {MAX_CURSOR_CHARS}: the `next` of the previous page)")
    return raw


def page_of(items: Sequence[T], key: Callable[[T], str], limit: int | None, after: str | None) -> Page[T]:
    """The page of `items` (in key order) after `after`, at most `limit` long."""
    ordered = sorted(items, key=key)
    rest = ordered if after is None else [item for item in ordered if key(item) > after]
    if limit is None or len(rest) <= limit:
        return Page(rest, len(ordered), None)
    chosen = rest[:limit]
    return Page(chosen, len(ordered), key(chosen[-1]))
