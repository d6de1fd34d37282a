"""hypercore.runtime.logs: the last N lines read from the end, chunked reads, the cap, rotation, CRI, UTF-8."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypercore.runtime.logs import Utf8Sanitizer, iter_log_file

LINES = [f"line {i}\n".encode() for i in range(50_000)]


async def read(path: Path, fmt: str = "plain", **kw: object) -> bytes:
    return b"".join([chunk async for chunk in iter_log_file(path, fmt, **kw)])  # type: ignore[arg-type]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "output.log"


async def test_tail_counts_lines_from_the_end(log: Path) -> None:
    log.write_bytes(b"".join(LINES))
    assert await read(log, tail_lines=3) == b"".join(LINES[-3:])
    assert await read(log, tail_lines=1) == LINES[-1]
    assert await read(log, tail_lines=0) == b""
    assert await read(log, tail_lines=10**9) == b"".join(LINES)
    assert await read(log, chunk=1000) == b"".join(LINES)
    log.write_bytes(b"a\nb\nc")  # an unfinished last line counts
    assert await read(log, tail_lines=2) == b"b\nc"
    log.write_bytes(b"\n\n\n")
    assert await read(log, tail_lines=2) == b"\n\n"


async def test_missing_or_empty_logs_are_empty(log: Path) -> None:
    assert await read(log) == b"" and await read(log, tail_lines=5) == b""
    log.write_bytes(b"")
    assert await read(log, tail_lines=5) == b""


async def test_the_rotated_file_comes_first(log: Path) -> None:
    log.with_name("output.log.1").write_bytes(b"old1\nold2\n")
    log.write_bytes(b"new1\nnew2\n")
    assert await read(log) == b"old1\nold2\nnew1\nnew2\n"
    assert await read(log, tail_lines=3) == b"old2\nnew1\nnew2\n"
    assert await read(log, tail_lines=2) == b"new1\nnew2\n"


async def test_the_cap_keeps_the_end_from_a_line_start(log: Path) -> None:
    log.write_bytes(b"".join(LINES))
    out = await read(log, max_bytes=1000)
    assert len(out) <= 1000 and out.endswith(LINES[-1]) and out.startswith(b"line ")
    out = await read(log, tail_lines=10_000, max_bytes=1000)
    assert len(out) <= 1000 and out.endswith(LINES[-1])


async def test_invalid_utf8_becomes_one_question_mark_per_byte(log: Path) -> None:
    raw = b"\xff" * 1000 + "é€😀".encode() * 5000 + b"\xed\xa0\x80 \xc3"
    log.write_bytes(raw)
    for chunk in (1, 7, 4096):
        out = await read(log, chunk=chunk)
        assert out == b"?" * 1000 + "é€😀".encode() * 5000 + b"??? ?"
        assert len(out) == len(raw)
    sanitizer = Utf8Sanitizer()
    assert sanitizer.feed(b"\xe2\x82") == b"" and sanitizer.feed(b"\xac!") == "€!".encode()


def cri(stream: str, tag: str, text: str) -> bytes:
    return f"2026-01-01T00:00:00.000000000+00:00 {stream} {tag} {text}\n".encode()


async def test_container_logs_are_read_back_as_output_lines(log: Path) -> None:
    records = b"".join(cri("stdout", "P", f"part{i}-") + cri("stderr", "F", f"end{i}") for i in range(2000))
    log.write_bytes(records)
    assert await read(log, "k8s", tail_lines=2) == b"part1998-end1998\npart1999-end1999\n"
    assert await read(log, "k8s", chunk=100) == b"".join(f"part{i}-end{i}\n".encode() for i in range(2000))
    log.write_bytes(records + cri("stdout", "P", "still writing"))
    assert await read(log, "k8s", tail_lines=2) == b"part1999-end1999\nstill writing"
    assert len(await read(log, "k8s", max_bytes=500)) <= 500
