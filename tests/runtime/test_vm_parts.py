"""The vm runtime's pure parts, without QEMU: the spec's runtime choice, the initramfs archive,
the exit-code scanner of the console and the QEMU command line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from hypercore.runtime.vm_assets import GuestAssets, cpio, workload_initrd
from hypercore.runtime.vm_monitor import ExitCodeScanner
from hypercore.runtime.vm_qemu import hostfwd, qemu_argv
from hypercore.workload import WorkloadSpec


def test_the_runtime_picks_the_capability_a_node_needs() -> None:
    assert WorkloadSpec(command="true").capability == "exec"
    assert WorkloadSpec(image_ref="busybox").capability == "container"
    assert WorkloadSpec(image_ref="busybox", runtime="container").capability == "container"
    assert WorkloadSpec(image_ref="busybox", runtime="vm").capability == "vm"
    # A container spec is sent exactly as before (old nodes forbid unknown fields).
    assert "runtime" not in WorkloadSpec(image_ref="busybox").model_dump(exclude_none=True)


def test_a_runtime_without_an_image_or_an_unknown_one_is_refused_with_what_is_allowed() -> None:
    with pytest.raises(ValidationError, match="a 'command' always runs with exec"):
        WorkloadSpec(command="true", runtime="vm")
    with pytest.raises(ValidationError, match="'container' or 'vm'"):
        WorkloadSpec(image_ref="busybox", runtime="firecracker")  # type: ignore[arg-type]


def test_the_cpio_archive_is_what_cpio_itself_reads(tmp_path: Path) -> None:
    archive = cpio([("bin", 0o040755, b""), ("bin/tool", 0o100755, b"#!/bin/sh\necho hi\n"),
                    ("bin/link", 0o120777, b"tool")])
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=archive, capture_output=True, check=True).stdout
    assert listing.decode().split() == ["bin", "bin/tool", "bin/link"]
    subprocess.run(["cpio", "-id", "--quiet"], input=archive, cwd=tmp_path, check=True)
    assert (tmp_path / "bin" / "tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (tmp_path / "bin" / "link").readlink() == Path("tool")


def test_the_workload_part_quotes_every_argument_and_variable(tmp_path: Path) -> None:
    base = tmp_path / "base.cpio"
    base.write_bytes(cpio([("init", 0o100755, b"x")]))
    workload_initrd(base, tmp_path / "initrd", ["/bin/sh", "-c", "echo '$HOME'; rm -rf /"], {"A": "x y; z"}, "hc-1")
    initrd = (tmp_path / "initrd").read_bytes()
    assert initrd.startswith(base.read_bytes())  # the shared base, then the workload's own archive
    subprocess.run(["cpio", "-id", "--quiet"], input=initrd[base.stat().st_size:], cwd=tmp_path, check=True)
    script = (tmp_path / "hypercore" / "run.sh").read_text()
    out = subprocess.run(["sh", "-c", script + "\nenv() { printf '[%s]' \"$@\"; }; hc_run"], capture_output=True,
                         text=True, check=True).stdout
    assert out == "[-i][A=x y; z][/bin/chroot][/newroot][/bin/sh][-c][echo '$HOME'; rm -rf /]"
    with pytest.raises(ValueError, match="no command to run"):
        workload_initrd(base, tmp_path / "initrd", [], {}, "hc-1")


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_the_last_exit_code_line_wins_in_any_chunking(chunk: int) -> None:
    stream = (b"hypercore-exit-code=9 is not alone on its line\r\nhypercore-exit-code=0\r\n"
              b"work output\r\nhypercore-exit-code=143\r\n[    1.8] reboot: Restarting system\r\n")
    scanner = ExitCodeScanner()
    for i in range(0, len(stream), chunk):
        scanner.feed(stream[i:i + chunk])
    scanner.close()
    assert scanner.code == 143
    empty = ExitCodeScanner()
    empty.feed(b"kernel panic, no marker\r\n")
    empty.close()
    assert empty.code is None


def test_cpu_mem_and_ports_map_to_smp_m_and_hostfwd(tmp_path: Path) -> None:
    assets = GuestAssets(kernel=tmp_path / "vmlinuz", initramfs=tmp_path / "base.cpio", version="v")
    argv = qemu_argv("qemu", assets, tmp_path / "initrd", tmp_path / "disk.ext4", accel="tcg", cpu=1.5, mem_mb=128,
                     tsc_khz=2_600_000, ports=["8080:80", "5353:53/udp"], host_ip="127.0.0.1")
    assert argv[argv.index("-m") + 1] == "128" and argv[argv.index("-smp") + 1] == "2"
    assert "tsc_early_khz=2600000" in argv[argv.index("-append") + 1]
    assert "hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:127.0.0.1:5353-:53" in argv[argv.index("-netdev") + 1]
    assert hostfwd(["80:8080"], "") == ["hostfwd=tcp::80-:8080"]  # "": every address, as for containers
