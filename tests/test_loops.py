"""hypercore.loops: the change notices and the loop that sleeps on them (what lets an idle agent sleep)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from hypercore.loops import Notifier, Wakeup, reactive

log = logging.getLogger("test")


async def test_a_wakeup_ends_the_wait_at_once_and_says_it_was_set() -> None:
    wakeup = Wakeup()
    asyncio.get_running_loop().call_later(0.05, wakeup.set)
    start = time.monotonic()
    assert await wakeup.wait(30) is True
    assert time.monotonic() - start < 5
    assert await wakeup.wait(0.05) is False  # cleared: the next wait runs to its timeout


async def test_a_wakeup_set_from_another_thread_wakes_the_loop() -> None:
    wakeup = Wakeup()
    waiting = asyncio.ensure_future(wakeup.wait(30))
    await asyncio.sleep(0.05)
    threading.Thread(target=wakeup.set).start()
    assert await asyncio.wait_for(waiting, 5) is True


async def test_reactive_ticks_on_a_notice_at_its_own_deadline_and_takes_a_burst_in_one_tick() -> None:
    wakeup, notices = Wakeup(), Notifier()
    notices.subscribe(wakeup.set)
    ticks: list[float] = []
    next_in: list[float | None] = [None]

    def tick() -> float | None:
        ticks.append(time.monotonic())
        if len(ticks) == 1:
            raise RuntimeError("a failing tick is logged; the loop goes on")
        return next_in[0]

    loop = asyncio.ensure_future(reactive(wakeup, tick, longest=60, shortest=0.2, what="test loop", log=log))
    try:
        await asyncio.sleep(0.3)
        assert len(ticks) == 1  # nothing changed: no tick (60 s is the longest sleep)
        for _ in range(20):  # a burst of changes ...
            notices.notify()
        await asyncio.sleep(0.6)
        assert len(ticks) == 2  # ... is one tick
        next_in[0] = 0.1  # a tick that names its next deadline runs again then
        notices.notify()
        await asyncio.sleep(1.0)
        assert len(ticks) >= 4
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
