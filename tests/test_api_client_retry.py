"""The CLI's API client waits as a 429 answer tells it, for reads only (a listing read page by page asks every
node per page: hypercore.api.ratelimit). A real HTTP server on loopback answers as staged."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from hypercore.api.client import ApiClient, ApiClientError


@pytest.fixture
def staged() -> Iterator[tuple[str, list[tuple[int, str]], list[str]]]:
    """(address, answers to give in order — (status, Retry-After) —, the methods received)."""
    answers: list[tuple[int, str]] = []
    received: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            received.append(self.command)
            status, retry_after = answers.pop(0) if answers else (200, "")
            body = b'{"ok": true}' if status == 200 else b'{"error": {"code": "rate_limited", "message": "slow down"}}'
            self.send_response(status)
            if retry_after:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answers, received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_read_told_to_wait_waits_and_goes_on(staged: tuple[str, list[tuple[int, str]], list[str]]) -> None:
    addr, answers, received = staged
    answers.extend([(429, "1"), (429, "1")])
    started = time.monotonic()
    assert ApiClient(addr).request("GET", "/v1/workloads") == {"ok": True}
    assert time.monotonic() - started >= 2.0 and received == ["GET"] * 3


def test_a_write_a_long_wait_or_one_without_retry_after_is_an_error_at_once(
        staged: tuple[str, list[tuple[int, str]], list[str]]) -> None:
    addr, answers, received = staged
    for status, retry_after, method in ((429, "1", "POST"), (429, "3600", "GET"), (429, "", "GET")):
        answers.append((status, retry_after))
        received.clear()
        with pytest.raises(ApiClientError) as err:
            ApiClient(addr).request(method, "/v1/workloads", json={} if method == "POST" else None)
        assert err.value.status == 429 and "slow down" in str(err.value) and received == [method]


def test_a_read_refused_more_often_than_it_retries_is_an_error(
        staged: tuple[str, list[tuple[int, str]], list[str]]) -> None:
    addr, answers, received = staged
    answers.extend([(429, "0")] * 10)
    with pytest.raises(ApiClientError):
        ApiClient(addr).request("GET", "/v1/workloads")
    assert len(received) == 4  # the first and three more
