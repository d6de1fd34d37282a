"""A tiny local OCI image for container tests, built without any registry.

Tests here cannot pull images, so they build one: a root filesystem holding
Debian's static busybox (package ``busybox-static``) as ``/bin/busybox``,
symlinks for the applets the tests use, and ``/www/index.html`` for busybox
httpd; tarred and ``<engine> import``-ed as :data:`TEST_IMAGE`. It is built
once and reused (by this and later sessions) while the engine still has it.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Final

__all__ = ["BUSYBOX", "INDEX_HTML", "TEST_IMAGE", "busybox_is_static", "ensure_test_image"]

TEST_IMAGE: Final = "localhost/hypercore-test-busybox:1"
BUSYBOX: Final = Path("/bin/busybox")
APPLETS: Final = ("sh", "httpd", "echo", "sleep", "env", "cat", "printf", "id")
INDEX_HTML: Final = b"<html><body>hello from hypercore</body></html>\n"

_lock = threading.Lock()
_built: dict[str, str] = {}


def busybox_is_static(path: Path = BUSYBOX) -> bool:
    """True when ``path`` is an ELF executable without a program interpreter
    (i.e. statically linked, so it runs in an otherwise empty rootfs)."""
    try:
        with open(path, "rb") as fh:
            ident = fh.read(64)
            if ident[:4] != b"\x7fELF" or ident[4] != 2:  # 64-bit only
                return False
            endian = "<" if ident[5] == 1 else ">"
            phoff, = struct.unpack_from(endian + "Q", ident, 0x20)
            phentsize, phnum = struct.unpack_from(endian + "HH", ident, 0x36)
            for i in range(phnum):
                fh.seek(phoff + i * phentsize)
                p_type, = struct.unpack(endian + "I", fh.read(4))
                if p_type == 3:  # PT_INTERP: needs a dynamic loader
                    return False
            return True
    except (OSError, struct.error):
        return False


def _image_exists(engine: str, ref: str) -> bool:
    proc = subprocess.run([engine, "image", "inspect", ref], capture_output=True, timeout=30, check=False)
    return proc.returncode == 0


def _build_tar(dest: Path) -> None:
    root = dest.parent / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "www").mkdir()
    (root / "tmp").mkdir(mode=0o1777)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "www" / "index.html").write_bytes(INDEX_HTML)
    with tarfile.open(dest, "w") as tar:
        for entry in sorted(root.rglob("*")):
            tar.add(entry, arcname=str(entry.relative_to(root)), recursive=False)


def ensure_test_image(engine: str, ref: str = TEST_IMAGE) -> str:
    """Import the busybox test image into ``engine`` unless it is there; return its ref.

    Raises when there is no static busybox to put in it: tests that build the
    image carry the ``podman`` marker, whose check in tests/conftest.py skips
    (or fails) them first, so getting here without one is a bug, not a skip.
    """
    with _lock:
        if _built.get(engine) == ref:
            return ref
        if _image_exists(engine, ref):
            _built[engine] = ref
            return ref
        if not busybox_is_static():
            raise RuntimeError(f"no static {BUSYBOX} to build the test image from: apt-get install busybox-static")
        with tempfile.TemporaryDirectory(prefix="hc-image-") as tmp:
            tar_path = Path(tmp) / "rootfs.tar"
            _build_tar(tar_path)
            proc = subprocess.run(
                [engine, "import", "--change", 'CMD ["/bin/sh"]', str(tar_path), ref],
                capture_output=True,
                timeout=120,
                check=False,
            )
        if proc.returncode != 0 and not _image_exists(engine, ref):  # a parallel import may have won
            raise RuntimeError(f"{engine} import failed: {proc.stderr.decode(errors='replace').strip()}")
        _built[engine] = ref
        return ref
