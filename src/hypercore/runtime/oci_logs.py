"""Reading a container's k8s-file (CRI) log back as the plain output.

With Podman the container driver lets conmon write the workload's stdout and
stderr straight into its ``output.log`` in CRI format, one record a line::

    <RFC3339 time> <stdout|stderr> <F|P> <text>

These functions turn such a file back into the interleaved plain output, or
its last bytes without reading the whole file. They are synchronous file
reads: async code calls them through ``asyncio.to_thread`` (a log can be big).
"""

from __future__ import annotations

import os
from typing import BinaryIO

__all__ = ["read_k8s_log"]


def _parse_k8s(raw: bytes) -> bytes:
    """CRI log lines → the plain output.

    ``F`` ends a line of output, ``P`` is a piece of a longer one (no newline
    follows). Anything that does not look like a CRI line is passed through
    unchanged, so a file written some other way is still readable.
    """
    out = bytearray()
    for line in raw.splitlines(keepends=True):
        body = line[:-1] if line.endswith(b"\n") else line
        parts = body.split(b" ", 3)
        if len(parts) >= 3 and parts[1] in (b"stdout", b"stderr") and parts[2][:1] in (b"F", b"P"):
            out += parts[3] if len(parts) == 4 else b""
            if parts[2][:1] == b"F":
                out += b"\n"
        else:
            out += line
    return bytes(out)


def read_k8s_log(path: str | os.PathLike[str], tail_bytes: int | None = None) -> bytes:
    """The plain output in a k8s-file log, or its last ``tail_bytes`` bytes.

    For a tail only the end of the file is read: the plain text is never
    longer than the raw file, so reading ``tail_bytes`` plus the prefixes'
    share is enough, and the window doubles until it is.
    """
    if tail_bytes is not None and tail_bytes <= 0:
        return b""
    try:
        with open(path, "rb") as fh:
            return _parse_k8s(fh.read()) if tail_bytes is None else _tail_k8s(fh, tail_bytes)
    except FileNotFoundError:
        return b""


def _tail_k8s(fh: BinaryIO, want: int) -> bytes:
    size = fh.seek(0, os.SEEK_END)
    window = want * 2 + 4096
    while True:
        start = max(0, size - window)
        fh.seek(start)
        raw = fh.read(size - start)
        if start > 0:
            # Drop the (probably cut) first line; its prefix may be gone.
            cut = raw.find(b"\n")
            raw = raw[cut + 1 :] if cut >= 0 else b""
        plain = _parse_k8s(raw)
        if len(plain) >= want or start == 0:
            return plain[-want:]
        window *= 2

