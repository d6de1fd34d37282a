"""Waiting on a condition from async tests: the asyncio twin of
:func:`hypercore.devcluster.wait_for`, so tests wait for what they need
instead of sleeping for a guessed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    predicate: Callable[[], T | Awaitable[T]], timeout: float, what: str, interval: float = 0.02
) -> T:
    """Poll ``predicate`` (sync or async) until it returns something truthy;
    return that. Raises AssertionError naming ``what`` and the last value
    after ``timeout`` seconds. Sync predicates run on the loop's thread, so
    keep them cheap (reading /proc, not calling an engine)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        value: T = await result if inspect.isawaitable(result) else result  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        await asyncio.sleep(interval)
