"""The API server does not wake up while idle (issue 10: idle CPU per node): uvicorn's loop woke 10 times a
second to refresh the Date header and look for a shutdown request (the agent's once a second). Real uvicorn
on loopback: the Date header must still be the current second's, and a shutdown must still be prompt."""

from __future__ import annotations

import asyncio
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from hypercore.api.server import make_server
from hypercore.devcluster import free_port


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_the_date_header_is_current_and_a_shutdown_is_prompt() -> None:
    port = free_port()
    server = make_server(app, "127.0.0.1", port, None)
    serve = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                r = await client.get(f"http://127.0.0.1:{port}/")
                assert r.status_code == 200 and r.headers.get_list("date") and len(r.headers.get_list("date")) == 1
                date = parsedate_to_datetime(r.headers["date"]).timestamp()
                assert abs(date - time.time()) <= 1.0, r.headers["date"]
                await asyncio.sleep(1.1)  # the next request falls in another second
    finally:
        started = time.monotonic()
        server.should_exit = True
        await asyncio.wait_for(serve, 5.0)
        assert time.monotonic() - started < 0.5  # woken at once, not at the next tick
