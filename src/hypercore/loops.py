"""Background work of an agent: a set of tasks to cancel together, periodic loops, back-off delays.

One home for what every room of the agent needs: a loop that survives a
failing tick (logged, not fatal), and an exponential back-off for retries.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


class TaskSet:
    """Fire-and-forget tasks that are still cancelled together on close (none outlives its owner)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def periodic(interval: float, tick: Callable[[], Awaitable[Any] | Any], *, what: str,
                   log: logging.Logger) -> None:
    """Run `tick` every `interval` seconds until cancelled; a failing tick is logged and the loop goes on."""
    while True:
        try:
            result = tick()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(f"{what} failed; trying again in {interval:g} s")
        await asyncio.sleep(interval)


class Backoff:
    """Delays that double from `first` up to `cap`: 1, 2, 4, … seconds between retries."""

    def __init__(self, first: float = 1.0, cap: float = 15.0, factor: float = 2.0) -> None:
        self.first, self.cap, self.factor = first, cap, factor
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first
