"""Reading a workload's log without loading it: the last N lines, or all of it, in chunks, capped.

A log can be as big as its cap on disk (``--max-log-mb``), or bigger when a
driver does not cap it; an answer to ``logs`` must cost the node a few chunks
of memory, not the file. So:

* the files are read in chunks of :data:`CHUNK` bytes, in a worker thread,
  and handed on one chunk at a time (the API streams them);
* ``tail_lines=N`` finds where the last N lines begin by reading the file
  backwards in blocks, counting line ends, and streams from there;
* every answer is capped at ``max_bytes`` of the file: a bigger log is
  answered with its *last* ``max_bytes``, starting at a line start;
* a rotated file (``output.log.1``, a driver's previous log) is read before
  ``output.log``;
* invalid UTF-8 is replaced with one ``?`` per bad byte (an incremental
  decoder, so a character cut by a chunk boundary is not mangled): the
  answer is never longer than the file (U+FFFD would triple a bad byte);
* a container's k8s-file log (CRI records, hypercore.runtime.oci_logs) is
  turned back into plain output record by record; a line of output is a run
  of ``P`` records ended by an ``F`` record, and that is what ``tail`` counts.

Logs an engine keeps itself (Docker's, read with ``<engine> logs``) come
through the driver's ``read_logs`` hook, whole, then are cut the same way.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

from hypercore.runtime.base import LogReader
from hypercore.runtime.oci_logs import _parse_k8s as parse_cri
from hypercore.store import WorkloadRecord

__all__ = ["CHUNK", "DEFAULT_MAX_BYTES", "Utf8Sanitizer", "iter_log_file", "iter_logs", "log_files", "read_tail"]

CHUNK: Final = 64 * 1024
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
ROTATED_SUFFIX: Final = ".1"
_HEADER: Final = 64  # enough of a CRI record for its time, stream and tag
_ALIGN_SCAN: Final = 64 * 1024  # how far a capped start looks ahead for the next line start
_MAX_CARRY: Final = 1024 * 1024  # a "record" longer than this without a newline is passed through raw
_ERRORS: Final = "hypercore.qmark"

Format = Literal["plain", "k8s"]


def _qmark(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "?" * (exc.end - exc.start), exc.end


codecs.register_error(_ERRORS, _qmark)


class Utf8Sanitizer:
    """Bytes in, valid UTF-8 out, one ``?`` per invalid byte; feed chunks in order, then flush."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(_ERRORS)

    def feed(self, data: bytes) -> bytes:
        return self._decoder.decode(data).encode()

    def flush(self) -> bytes:
        return self._decoder.decode(b"", final=True).encode()


class _CriParser:
    """CRI records → plain output, chunk by chunk (a record cut by a chunk waits for its end)."""

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        data = self._carry + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._carry = b"" if len(data) > _MAX_CARRY else data
            return data if len(data) > _MAX_CARRY else b""
        self._carry = data[cut + 1 :]
        return parse_cri(data[: cut + 1])

    def flush(self) -> bytes:
        rest, self._carry = self._carry, b""
        return parse_cri(rest) if rest else b""


@dataclass
class _Segment:
    """The bytes [start, end) of one open log file."""

    fh: BinaryIO
    start: int
    end: int


def read_tail(path: Path, tail_bytes: int | None) -> bytes:
    """The file's bytes, or its last ``tail_bytes``; b"" when there is no file (blocking)."""
    try:
        with open(path, "rb") as fh:
            if tail_bytes is not None:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - max(0, tail_bytes)))
            return fh.read()
    except FileNotFoundError:
        return b""  # accepted but the driver never opened the log


def read_rotated(path: Path, tail_bytes: int | None) -> bytes:
    """A capped, rotated log (``path.1`` then ``path``) whole, or its last ``tail_bytes`` (blocking)."""
    data = b"".join(read_tail(p, tail_bytes) for p in log_files(path))
    if tail_bytes is None:
        return data
    return data[-tail_bytes:] if tail_bytes > 0 else b""


def log_files(path: Path) -> list[Path]:
    """The files a log is made of, oldest first: the rotated one, then ``path``."""
    return [path.with_name(path.name + ROTATED_SUFFIX), path]


def _open(paths: list[Path]) -> list[_Segment]:
    segments = []
    for p in paths:
        try:
            fh = open(p, "rb")  # noqa: SIM115 - closed by the stream
        except (FileNotFoundError, NotADirectoryError):
            continue
        # The size now: a file that grows while it is read does not make the answer endless.
        segments.append(_Segment(fh, 0, os.fstat(fh.fileno()).st_size))
    return segments


def _lines_backward(fh: BinaryIO, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, first bytes) of each line in [start, end), the last line first.

    A line ends with a newline or at ``end``; memory stays one block, however
    long the lines are.
    """
    if end <= start:
        return
    fh.seek(end - 1)
    limit = end - 1 if fh.read(1) == b"\n" else end  # a final newline ends the last line
    pos = limit
    while pos > start:
        lo = max(start, pos - CHUNK)
        fh.seek(lo)
        block = fh.read(pos - lo)
        i = len(block)
        while (j := block.rfind(b"\n", 0, i)) >= 0:
            line = lo + j + 1
            head = block[j + 1 : j + 1 + _HEADER]
            if len(head) < _HEADER and line + len(head) < end:
                fh.seek(line)
                head = fh.read(_HEADER)
            yield line, head
            i = j
        pos = lo
    fh.seek(start)
    yield start, fh.read(_HEADER)


def _ends_a_line(fmt: Format, head: bytes) -> bool:
    """Whether this record ends a line of output (a CRI ``P`` record does not)."""
    if fmt == "plain":
        return True
    parts = head.split(b" ", 3)
    if len(parts) >= 3 and parts[1] in (b"stdout", b"stderr") and parts[2][:1] in (b"F", b"P"):
        return parts[2][:1] == b"F"
    return True


def _tail_start(seg: _Segment, want: int, fmt: Format, partial_counts: bool) -> tuple[int, int]:
    """(offset where the last ``want`` lines of the segment begin, lines found there)."""
    seen = 0
    after = seg.end  # the start of the record after the current one
    last = True
    for offset, head in _lines_backward(seg.fh, seg.start, seg.end):
        if _ends_a_line(fmt, head):
            if seen == want:
                return after, seen
            seen += 1
        elif last and partial_counts:
            seen = 1  # output still being written at the very end counts as a line
        last = False
        after = offset
    return seg.start, seen


def _align(seg: _Segment) -> None:
    """Move the start of a cut segment to the next line start (if one is near)."""
    if seg.start == 0:
        return
    seg.fh.seek(seg.start - 1)
    look = seg.fh.read(min(_ALIGN_SCAN, seg.end - seg.start + 1))
    cut = look.find(b"\n")
    if cut >= 0:
        seg.start += cut


def _plan(segments: list[_Segment], fmt: Format, tail_lines: int | None, max_bytes: int) -> list[_Segment]:
    """The segments to send, each cut to what the answer holds."""
    if tail_lines is not None:
        want, kept = tail_lines, []
        for seg in reversed(segments):
            if want <= 0:
                break
            seg.start, found = _tail_start(seg, want, fmt, partial_counts=not kept)
            kept.insert(0, seg)
            want -= found
        segments = kept
    excess = sum(s.end - s.start for s in segments) - max(0, max_bytes)
    while excess > 0 and segments:
        first = segments[0]
        if first.end - first.start <= excess:
            excess -= first.end - first.start
            segments.pop(0)
        else:
            first.start += excess
            excess = 0
            _align(first)
    return segments


def _chunks(paths: list[Path], fmt: Format, tail_lines: int | None, max_bytes: int,
            chunk: int) -> Iterator[bytes]:
    """The plan, read and cleaned chunk by chunk (blocking: run it in a thread)."""
    segments = _open(paths)
    try:
        if tail_lines is not None and tail_lines <= 0:
            return
        utf8 = Utf8Sanitizer()
        for seg in _plan(segments, fmt, tail_lines, max_bytes):
            cri = _CriParser() if fmt == "k8s" else None
            seg.fh.seek(seg.start)
            left = seg.end - seg.start
            while left > 0:
                data = seg.fh.read(min(chunk, left))
                if not data:
                    break  # truncated meanwhile (a container's log starts over at its cap)
                left -= len(data)
                out = utf8.feed(cri.feed(data) if cri is not None else data)
                if out:
                    yield out
            if cri is not None and (out := utf8.feed(cri.flush())):
                yield out
        if out := utf8.flush():
            yield out
    finally:
        for seg in segments:
            seg.fh.close()


def _bytes_chunks(data: bytes, tail_lines: int | None, max_bytes: int, chunk: int) -> Iterator[bytes]:
    """The same cuts, for a log an engine handed over whole."""
    if tail_lines is not None:
        if tail_lines <= 0:
            return
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[-tail_lines:])
    if len(data) > max_bytes:
        data = data[len(data) - max_bytes :]
        cut = data.find(b"\n")
        data = data[cut + 1 :] if 0 <= cut < _ALIGN_SCAN else data
    utf8 = Utf8Sanitizer()
    for i in range(0, len(data), chunk):
        if out := utf8.feed(data[i : i + chunk]):
            yield out
    if out := utf8.flush():
        yield out


class _Reader:
    """A blocking generator that worker threads advance one item at a time, and that closes safely."""

    def __init__(self, gen: Iterator[bytes]) -> None:
        self._gen = gen
        self._lock = threading.Lock()
        self._closed = False

    def next(self) -> bytes | None:
        with self._lock:
            return None if self._closed else next(self._gen, None)

    def close(self) -> None:
        with self._lock:  # waits for a read in flight (one chunk) to end
            self._closed = True
            self._gen.close()


async def _threaded(gen: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A blocking generator's items, each produced in a worker thread; closed (files too) when done."""
    loop = asyncio.get_running_loop()
    reader = _Reader(gen)
    try:
        while (item := await loop.run_in_executor(None, reader.next)) is not None:
            yield item
    finally:
        # Also when cancelled mid-read: the close queues behind that read, off the event loop.
        try:
            loop.run_in_executor(None, reader.close)
        except RuntimeError:  # the executor is shut down: nothing else reads any more
            reader.close()


def iter_log_file(path: Path, fmt: Format = "plain", *, tail_lines: int | None = None,
                  max_bytes: int = DEFAULT_MAX_BYTES, chunk: int = CHUNK) -> AsyncIterator[bytes]:
    """The log at ``path`` (and its rotated predecessor), as clean UTF-8 chunks (see the module docstring)."""
    return _threaded(_chunks(log_files(path), fmt, tail_lines, max_bytes, chunk))


async def _engine_log(driver: LogReader, record: WorkloadRecord, path: Path, tail_lines: int | None,
                      max_bytes: int, chunk: int) -> AsyncIterator[bytes]:
    data = await driver.read_logs(record.handle, path, None)
    for piece in _bytes_chunks(data, tail_lines, max_bytes, chunk):
        yield piece


def iter_logs(record: WorkloadRecord, path: Path, driver: object, *, tail_lines: int | None = None,
              max_bytes: int = DEFAULT_MAX_BYTES, chunk: int = CHUNK) -> AsyncIterator[bytes]:
    """A workload's output for the API: its log file read as its driver wrote it."""
    handle = record.handle or {}
    if isinstance(driver, LogReader) and handle.get("log_driver") == "engine":
        return _engine_log(driver, record, path, tail_lines, max_bytes, chunk)
    fmt: Format = "k8s" if record.driver == "container" else "plain"
    return iter_log_file(path, fmt, tail_lines=tail_lines, max_bytes=max_bytes, chunk=chunk)
