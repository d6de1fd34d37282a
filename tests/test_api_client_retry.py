"""The CLI's API client waits as a 429 answer tells it, for reads only (a listing read page by page asks every
node per page: hypercore.api.ratelimit). A real HTTP server on loopback answers as staged."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest

from hypercore.api.client import ApiClient, ApiClientError


@contextlib.contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on loopback answering with `handler`, in a thread; its address."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


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

    with _serving(Handler) as addr:
        yield addr, answers, received


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



def test_cluster_spawn_names_the_node_asked_as_home_and_falls_back_for_an_agent_that_refuses_it() -> None:
    # Stands for an agent from before home ids (beacon protocol 3), which cannot run here: a real HTTP server on
    # loopback that says its name and refuses a request id with "@" as that agent's validation did (422).
    from click.testing import CliRunner

    from hypercore.cli.main import cli

    spawned: list[str] = []

    class OldAgent(http.server.BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(200, {"node": "old-1"})

        def do_POST(self) -> None:
            rid = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["request_id"]
            spawned.append(rid)
            if "@" in rid:
                self._send(422, {"error": {"code": "invalid_request",
                                           "message": "request_id: String should match pattern '^[A-Za-z0-9._:-]+$'"}})
            else:
                self._send(201, {"id": "w-1", "node": "old-1", "attempts": [],
                                 "decision": {"policy": "p", "summary": "1/1 nodes match"}})

        def log_message(self, *_args: object) -> None:
            pass

    with _serving(OldAgent) as addr:
        result = CliRunner().invoke(cli, ["cluster", "spawn", "--command", "true", "--json", "--addr", addr])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["node"] == "old-1"
    home, plain = spawned
    assert home.endswith("@old-1") and plain == home.split("@")[0]  # the same request, its id without the home
