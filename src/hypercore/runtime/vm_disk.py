"""A VM's root disk: an OCI image's filesystem as an ext4 image, built once per image digest.

The image must already be on the node (as for containers, nothing is
pulled). Its filesystem is taken with ``podman create`` + ``podman export``,
unpacked with GNU tar (which refuses members outside the target directory)
and written into a sparse ext4 image with ``mke2fs -d``: no loop device, no
mount, no root needed for that step. The disk is cached under
``<cache>/disks/<image id>.ext4`` and shared read-only by every VM of that
image: QEMU runs it with ``snapshot=on``, so a guest's writes go to a
temporary overlay of its own and vanish with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hypercore.runtime.base import RuntimeRefused
from hypercore.runtime.oci_engine import run_engine, trim

__all__ = ["ImageConfig", "root_disk"]

_IMAGE_ID: Final = re.compile(r"(sha256:)?([0-9a-f]{64})")
# Free room on the root disk beyond the image's files (the guest's writes land in the overlay,
# but the filesystem inside must have space for them). The file is sparse: unused room costs nothing.
_ROOM_MB: Final = 256
_TIMEOUT: Final = 300.0


@dataclass(frozen=True)
class ImageConfig:
    """What of an image's configuration the guest uses."""

    image_id: str
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, args: Sequence[str] | None) -> list[str]:
        """The command the guest runs: Entrypoint + (``args`` or Cmd), as for a container."""
        return [*self.entrypoint, *(self.cmd if args is None else args)]


def _config(data: dict[str, Any]) -> ImageConfig:
    config = data.get("Config") or {}
    env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    match = _IMAGE_ID.fullmatch(str(data.get("Id", "")))
    if match is None:
        raise RuntimeRefused(f"the container engine reported an unexpected image id {data.get('Id')!r}")
    return ImageConfig(image_id=match.group(2), entrypoint=list(config.get("Entrypoint") or []),
                       cmd=list(config.get("Cmd") or []), env=env)


async def _engine(engine: str, *args: str) -> bytes:
    rc, out, err = await run_engine(engine, *args, timeout=_TIMEOUT)
    if rc != 0:
        raise RuntimeRefused(f"{engine} {args[0]} failed: {trim(err)}")
    return out


async def inspect_image(engine: str, image_ref: str) -> ImageConfig:
    rc, out, err = await run_engine(engine, "image", "inspect", "--", image_ref, timeout=_TIMEOUT)
    if rc != 0:
        raise RuntimeRefused(f"image {image_ref} is not on this node ({trim(err)}); the vm runtime does not pull "
                             "images: load it on the node first")
    return _config(json.loads(out)[0])


def _make_ext4(tar_path: Path, dest: Path) -> None:
    """Unpack ``tar_path`` and write it as a sparse ext4 image at ``dest`` (blocking)."""
    root = tar_path.parent / "root"
    root.mkdir()
    proc = subprocess.run(["tar", "--numeric-owner", "-xpf", str(tar_path), "-C", str(root)],
                          capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeRefused(f"could not unpack the image's filesystem: {proc.stderr.strip()[-300:]}")
    size_mb = tar_path.stat().st_size // (1024 * 1024) * 2 + _ROOM_MB
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    proc = subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(root), str(tmp), f"{size_mb}M"],
                          capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeRefused(f"mke2fs could not build the root disk: {proc.stderr.strip()[-300:]}")
    os.replace(tmp, dest)


async def root_disk(engine: str, image_ref: str, cache_dir: Path) -> tuple[Path, ImageConfig]:
    """The cached root disk of ``image_ref`` (built now if missing) and the image's configuration."""
    config = await inspect_image(engine, image_ref)
    disks = cache_dir / "disks"
    disks.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = disks / f"{config.image_id}.ext4"
    if dest.exists():
        return dest, config
    # Two agents building the same disk at once both succeed: the last os.replace wins, same content.
    cid = (await _engine(engine, "create", "--pull=never", "--entrypoint", "/none",
                                  "--", config.image_id)).decode().strip().splitlines()[-1]
    try:
        with tempfile.TemporaryDirectory(dir=disks, prefix=".build-") as tmp:
            tar_path = Path(tmp) / "root.tar"
            await _engine(engine, "export", "-o", str(tar_path), cid)
            await asyncio.to_thread(_make_ext4, tar_path, dest)
            await asyncio.to_thread(shutil.rmtree, Path(tmp) / "root", True)
    finally:
        await run_engine(engine, "rm", "-f", cid, timeout=_TIMEOUT)
    return dest, config
