"""Background work of an agent: a set of tasks to cancel together, loops, change notices, back-off delays.

One home for what every room of the agent needs: a loop that survives a
failing tick (logged, not fatal), and an exponential back-off for retries.

An idle agent should not wake up to find that nothing changed: whoever
changes what a loop reads (the workload registry, the member list) tells it
through a `Notifier`, and the loop (`reactive`) sleeps on a `Wakeup` until
then, or until its own next deadline, or at the latest `longest` seconds.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
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


class Notifier:
    """Callbacks run after a change; what reads the changed thing subscribes instead of polling it."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], Any]] = []

    def subscribe(self, callback: Callable[[], Any]) -> None:
        self._callbacks.append(callback)

    def notify(self) -> None:
        for callback in self._callbacks:
            callback()


class Wakeup:
    """What a loop sleeps on between ticks: `set()` by whoever changed what it reads (from any thread)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def set(self) -> None:
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._event.set()
        else:
            loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """Until set, or `timeout` seconds; then cleared. True when someone set it."""
        self._loop = loop = asyncio.get_running_loop()
        timed_out = False
        if not self._event.is_set():
            def expire() -> None:
                nonlocal timed_out
                timed_out = True
                self._event.set()

            timer = loop.call_later(max(0.0, timeout), expire)
            try:
                await self._event.wait()
            finally:
                timer.cancel()
        self._event.clear()
        return not timed_out


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def reactive(wakeup: Wakeup, tick: Callable[[], Awaitable[Any] | Any], *, longest: float,
                   shortest: float = 0.0, what: str, log: logging.Logger) -> None:
    """Run `tick` now, then whenever `wakeup` is set, and at least every `longest` seconds, until cancelled.

    A tick that returns a number of seconds (its own next deadline) is run again after at most that long;
    `shortest` spaces ticks out, so a burst of changes costs one tick. A failing tick is logged and the
    loop goes on.
    """
    while True:
        delay = longest
        try:
            result = tick()
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, (int, float)) and not math.isnan(result):
                delay = min(longest, max(0.0, float(result)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(f"{what} failed; trying again in {longest:g} s at the latest")
        if await wakeup.wait(delay) and shortest:
            await asyncio.sleep(shortest)  # more changes of the same burst, taken in by the same tick


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
