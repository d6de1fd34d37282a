"""One VM's monitor: the parent of its QEMU, which outlives the agent (like the exec supervisor).

The vm driver starts it (``python -I -S -c BOOTSTRAP vm_monitor.py --workdir DIR --id ID
--lock-fd N --log-bytes B -- QEMU ARGV...``) in a session of its own. It

1. starts QEMU in ``DIR`` (so the QMP socket's path is short and relative) with
   the guest's serial console on a pipe and QEMU's own messages in ``DIR/qemu.log``;
   both it and QEMU inherit the flock'ed ``DIR/vm.lock``: while either lives
   the lock is held, so "the lock is free" means nothing of the VM is left;
2. writes ``DIR/state.json`` and answers the driver with it on one line;
3. copies the console into ``DIR/output.log`` under the node's log cap
   (the supervisor's :class:`CappedLog`: past half the cap it becomes
   ``output.log.1``), remembering the last ``hypercore-exit-code=N`` line the
   guest's init printed before power-off: that is the workload's exit code;
4. when QEMU has ended, records ``exited`` with that code (or, without one,
   why: the guest crashed or QEMU was killed) and exits.

It ignores SIGTERM, SIGINT and SIGHUP: the agent's service manager stopping
the agent must not end VMs. Standard library only, loaded without the
hypercore package (as the supervisor is).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

if __package__:
    import hypercore.runtime.isolation as isolation
    import hypercore.runtime.supervisor as sv
else:  # run as a script: load the siblings alone (the package's __init__ costs ~0.1 s a start)
    def _sibling(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"hypercore_{name}", Path(__file__).with_name(f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    sv = _sibling("supervisor")
    isolation = sv.isolation  # the supervisor module loaded it: executed once, not twice

LOCK = "vm.lock"
QMP = "qmp.sock"
QEMU_LOG = "qemu.log"
STATE = "vm.json"  # not the exec supervisor's state.json: its scans must not take a VM for theirs
MARKER = b"hypercore-exit-code="
_READ = 1 << 16


class ExitCodeScanner:
    """Finds the last ``hypercore-exit-code=N`` line in a stream fed in arbitrary chunks."""

    def __init__(self) -> None:
        self.code: int | None = None
        self._partial = b""

    def feed(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-256:]  # only a line's start matters
        for line in lines:
            self._line(line)

    def close(self) -> None:
        self._line(self._partial)

    def _line(self, line: bytes) -> None:
        line = line.strip()
        if line.startswith(MARKER) and line[len(MARKER):].isdigit():
            self.code = int(line[len(MARKER):])


def _parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    split = argv.index("--")
    options, qemu = argv[:split], argv[split + 1:]
    return {options[i].lstrip("-"): options[i + 1] for i in range(0, len(options), 2)}, qemu


def main(argv: list[str] | None = None) -> int:
    options, qemu_argv = _parse(sys.argv[1:] if argv is None else argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    workdir, lock_fd = Path(options["workdir"]), int(options["lock-fd"])
    state: dict[str, Any] = {"kind": "vm", "id": options["id"], "status": "starting", "monitor_pid": os.getpid(),
                             "monitor_start_time": isolation.start_time(os.getpid()), "qmp": QMP}
    read_fd, write_fd = os.pipe()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(workdir)}  # snapshot=on overlay: here
    try:
        with open(workdir / QEMU_LOG, "ab") as qemu_log:
            qemu = subprocess.Popen(qemu_argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=write_fd,
                                    stderr=qemu_log, env=env, pass_fds=(lock_fd,), start_new_session=False,
                                    preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL)
                                                        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)])
    except OSError as exc:
        state.update(status="exited", error=f"could not start QEMU: {exc}")
        sv.write_json(workdir / STATE, state)
        print(json.dumps(state), flush=True)
        return 1
    os.close(write_fd)
    state.update(status="running", qemu_pid=qemu.pid, qemu_start_time=isolation.start_time(qemu.pid))
    sv.write_json(workdir / STATE, state)
    print(json.dumps(state), flush=True)
    with open(os.devnull, "wb") as null:  # nobody reads our stdout any more
        os.dup2(null.fileno(), 1)
    log = sv.CappedLog(workdir / sv.LOG, int(options["log-bytes"]))
    scanner = ExitCodeScanner()
    while data := os.read(read_fd, _READ):
        log.write(data)
        scanner.feed(data)
    scanner.close()
    log.close()
    status = qemu.wait()
    state.update(status="exited", qemu_status=status, exit_code=scanner.code)
    if scanner.code is None:
        how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        state["error"] = f"the VM ended without its command's exit code (QEMU {how})"
    sv.write_json(workdir / STATE, state)
    return 0
