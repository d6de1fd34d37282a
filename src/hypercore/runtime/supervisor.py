"""One exec workload's supervisor: the process that owns it, like conmon or a containerd shim.

The exec driver starts it (``python -I -S -c BOOTSTRAP supervisor.py --workdir DIR --id ID ...``)
in a session of its own and sends the workload (command and environment) on
its stdin, never on a command line that every local user can read (or forks
it from the zygote loaded ahead of need: :mod:`hypercore.runtime.handoff`). Then, as root:

1. takes a uid of the workload's own (:mod:`hypercore.runtime.uids`), creates its cgroups and limits,
   and its home ``DIR/home`` (0700, that uid's); ``DIR`` stays root's (0711): the workload cannot
   touch its log or this state;
2. starts ``/bin/sh -c COMMAND`` there with nothing but the environment it was
   given, as that uid, with no capabilities and no-new-privs
   (:func:`hypercore.runtime.isolation.drop_privileges`); with ``--init TINI``
   (as root) in a PID and mount namespace of its own under that init
   (:mod:`hypercore.runtime.namespaces`);
3. answers the driver with one JSON line (the state), then lives on alone:
   the agent may die and come back, the workload is not affected;
4. copies the workload's stdout and stderr (one pipe) into ``DIR/output.log``,
   capped: past half the cap the file becomes ``output.log.1`` (replacing the
   previous one), so the newest output is kept and the two never hold more
   than the cap;
5. on SIGTERM (the driver's stop; the grace is in ``DIR/stop``) sends SIGTERM to everything of the
   workload and SIGKILL after the grace; when the workload's first process ends by itself, what it
   left running gets SIGTERM and, a second later, SIGKILL;
6. records the end in the state and exits: exit code, and a reason (``killed: out of memory ...``).

The state (``DIR/state.json``, 0600, replaced atomically) is how anyone else learns about the
workload. ``DIR/supervisor.lock`` is flock'ed by the driver and handed to the supervisor (inherited,
or in the zygote's message), so it is held from the start: a free lock means no supervisor lives.
Standard library only, loaded without the hypercore package: see below.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

TYPE_CHECKING = False  # not typing's: every import counts in a start (argparse alone is ~10 ms)
if TYPE_CHECKING:
    from typing import Any

if __package__:
    import hypercore.runtime.cgroups as cgroups
    import hypercore.runtime.handoff as handoff
    import hypercore.runtime.isolation as isolation
    import hypercore.runtime.namespaces as namespaces
    import hypercore.runtime.uids as uids
else:  # run as a script: load the siblings alone (the package's __init__ costs ~0.1 s a start)

    def _sibling(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"hypercore_{name}", Path(__file__).with_name(f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    cgroups, isolation, namespaces, uids = (_sibling(n) for n in ("cgroups", "isolation", "namespaces", "uids"))

# How the driver starts this file: ``python -I -S -c BOOTSTRAP <this file> ARGS``. As a module its bytecode stays
# cached (a script run as __main__ is compiled at every start); os._exit: a teardown would copy the zygote's pages.
BOOTSTRAP = ("import importlib.util as u, os, sys; s = u.spec_from_file_location('hypercore_supervisor', "
             "sys.argv.pop(1)); m = sys.modules[s.name] = u.module_from_spec(s); s.loader.exec_module(m); "
             "c = m.main(); sys.stderr.flush(); os._exit(c)")
STATE = "state.json"
LOCK = "supervisor.lock"
STOP = "stop"
HOME = "home"
LOG = "output.log"
ROTATED = ".1"
SUPERVISOR_LOG = "supervisor.log"
SHELL = "/bin/sh"
DEFAULT_LOG_BYTES = 64 * 1024 * 1024
STOP_GRACE = 5.0
LEFTOVER_GRACE = 1.0
DRAIN = 2.0  # how long output may still come once every process of the workload is gone
RUNNING_CHECK_S = 30.0  # a safety net: signals wake the loop (0.5 s was 512 wake-ups a second with 256 workloads)
LATE_COMMAND_S = 0.25  # while it is asked to end: how often to look for a command its init started late
_READ = 1 << 20


def read_state(workdir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(workdir) / STATE).read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically with ``data`` (0600, never through a symlink)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(json.dumps(data, sort_keys=True).encode())
    os.replace(tmp, path)


class CappedLog:
    """Appends to ``path``; past ``cap // 2`` bytes it moves the file to ``path.1`` and starts anew."""

    def __init__(self, path: Path, cap: int) -> None:
        self.path = path
        self.half = max(1, cap // 2)
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = self.half - self.size
            if room <= 0:
                os.close(self.fd)
                os.replace(self.path, self.path.with_name(self.path.name + ROTATED))
                self.fd, self.size = self._open(), 0
                continue
            written = os.write(self.fd, view[:room])
            self.size += written
            view = view[written:]

    def close(self) -> None:
        os.close(self.fd)


class Supervisor:
    def __init__(self, args: SimpleNamespace) -> None:
        self.args = args
        self.workdir = Path(args.workdir)
        self.state: dict[str, Any] = {
            "id": args.id, "status": "starting", "supervisor_pid": os.getpid(),
            "supervisor_start_time": isolation.start_time(os.getpid()),
            "limits": {"mem_mb": args.mem_mb, "cpu": args.cpu, "pids": args.pids_max, "log_bytes": args.log_bytes},
        }
        self.stop_requested = False
        self.uid: int | None = None
        self.cg = cgroups.Cgroups()
        self.leader: int | None = None
        self.leader_status: int | None = None
        self._termed: set[int] = set()  # pids sent SIGTERM while ending the workload
        self.lease: uids.UidLease | None = None

    def save(self, **fields: Any) -> None:
        self.state.update(fields)
        write_json(self.workdir / STATE, self.state)

    # -- start ---------------------------------------------------------------------

    def start(self, spec: dict[str, Any]) -> int:
        """Set the workload up and start it; the read end of its output pipe."""
        args, home = self.args, self.workdir / HOME
        if os.geteuid() == 0:  # else it can change no uid: the workload runs as this process's
            self.lease = uids.allocate_uid(args.id, isolation.used_uids, args.uid_base, args.uid_count,
                                           Path(args.uid_lock_dir))
            self.uid = self.lease.uid
        home.mkdir(mode=0o700, exist_ok=True)
        if self.uid is not None:
            os.chown(home, self.uid, self.uid)
        self.cg = cgroups.cgroups_for(args.id, args.mem_mb, args.cpu, args.pids_max, use_cgroups=not args.no_cgroups)
        if self.lease is not None:
            self.lease.record(self.cg)  # before any process has the uid
        rlimits = cgroups.rlimits_for(self.cg, args.mem_mb, args.pids_max, self.uid is not None)
        self.save(uid=self.uid if self.uid is not None else os.getuid(), dedicated_uid=self.uid is not None,
                  home=str(home), cgroups={k: str(v) for k, v in self.cg.dirs.items()},
                  cgroup_versions=self.cg.versions, enforcement=self.cg.enforcement)
        if self.stop_requested:
            raise isolation.IsolationError("stopped before it started")
        argv, preexec = self._how_to_run(spec["command"], rlimits)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, _READ)  # fewer, bigger reads
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=write_end, stderr=subprocess.STDOUT,
                cwd=home, env=spec["env"], start_new_session=True, close_fds=True, preexec_fn=preexec,
            )
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            os.close(read_end)
            raise isolation.IsolationError(f"could not start {SHELL} as uid {self.uid}: {exc}") from exc
        finally:
            os.close(write_end)
        proc.returncode = 0  # reaped by this class, not by Popen
        self.leader = proc.pid
        stat = isolation.read_proc_stat(proc.pid)  # not reaped yet: there even if it already ended
        self.save(status="running", pid=proc.pid, pgid=proc.pid, start_time=stat.start_time if stat else None,
                  started_at=time.time())
        return read_end

    def _how_to_run(self, command: str, rlimits: list[tuple[int, int]]) -> tuple[list[str], Any]:
        """The workload's command line and preexec_fn: in namespaces of its own under ``--init`` when root
        can make them (hypercore.runtime.namespaces), else the shell alone; the state says which."""
        drop = isolation.drop_privileges(self.uid, self.cg, rlimits, os.getpid())
        shell = [SHELL, "-c", command]
        unavailable = "not asked for (no --init)" if not self.args.init else \
            "needs root" if os.geteuid() != 0 else None
        if unavailable is None:
            try:
                namespaces.new_pid_namespace()
            except OSError as exc:
                unavailable = str(exc)
        hide = namespaces.shared_dirs_to_hide(str(self.workdir / HOME)) if unavailable is None else []
        self.save(namespaces=unavailable is None, namespaces_unavailable=unavailable, private_dirs=hide)
        if unavailable is not None:
            return shell, drop
        tmp_mb = self.args.mem_mb

        def enter() -> None:
            namespaces.private_mounts(tmp_mb, hide)
            drop()

        return [self.args.init, "-g", "--", *shell], enter

    # -- supervise -------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.leader:
                self.leader_status = status

    def _grace(self) -> float:
        with contextlib.suppress(OSError, ValueError):
            return max(0.0, float((self.workdir / STOP).read_text()))
        return STOP_GRACE

    def _kill(self, sig: int) -> None:
        termed = isolation.kill_all(sig, pgid=self.leader, uid=self.uid, cg=self.cg)
        if sig == signal.SIGTERM:
            self._termed.update(termed)

    def _term_late_command(self) -> None:
        """A just-started tini drops a SIGTERM that comes before it handles signals, then starts the
        command: that command gets its own (isolation.term_new_children)."""
        if self.state.get("namespaces") and self.leader is not None and self.leader_status is None:
            isolation.term_new_children(self.leader, self._termed, uid=self.uid, cg=self.cg)

    def supervise(self, out: int, wake: int) -> None:
        log = CappedLog(self.workdir / LOG, self.args.log_bytes)
        sel = selectors.DefaultSelector()
        sel.register(out, selectors.EVENT_READ, "out")
        sel.register(wake, selectors.EVENT_READ, "wake")
        reading, stopping, kill_at, gone_at, late_check_at = True, False, None, None, 0.0
        while True:
            now = time.monotonic()
            if kill_at is not None:
                timeout = min(0.5, max(0.02, kill_at - now))
            elif self.leader_status is not None:
                timeout = 0.5  # ended: waiting for what it left and its last output (no signal says when)
            else:
                timeout = RUNNING_CHECK_S  # SIGCHLD and SIGTERM wake the loop (set_wakeup_fd)
            for key, _ in sel.select(timeout):
                if key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake, 512)
                    continue
                try:
                    data = os.read(out, _READ)
                except BlockingIOError:
                    continue
                if data:
                    log.write(data)
                else:
                    sel.unregister(out)
                    reading = False
            self._reap()
            now, ended = time.monotonic(), self.leader_status is not None
            if self.stop_requested and not stopping and not ended:
                stopping = True
                self._kill(signal.SIGTERM)
                kill_at = now + self._grace()
                late_check_at = now + LATE_COMMAND_S  # a command started just now gets time to set up its handlers
            if not ended and kill_at is None:
                continue
            if ended and not isolation.anything_left(uid=self.uid, cg=self.cg):
                gone_at = gone_at or now
                if not reading or now - gone_at > DRAIN:
                    break
                continue
            if ended and kill_at is None:  # what a workload whose first process ended left running
                self._kill(signal.SIGTERM)
                kill_at = now + LEFTOVER_GRACE
            elif kill_at is not None and now >= kill_at:
                self._kill(signal.SIGKILL)  # every round while anything is left: a fork bomb may need more
            elif kill_at is not None and now >= late_check_at:
                late_check_at = now + LATE_COMMAND_S  # not every round: output wakes the loop, this reads /proc
                self._term_late_command()
        log.close()
        os.close(out)

    def finish(self) -> None:
        status = self.leader_status or 0
        code = os.waitstatus_to_exitcode(status)
        sig = -code if code < 0 else None
        code = 128 - code if code < 0 else code
        oom = self.cg.oom_kills()
        self.cg.remove()
        home = self.workdir / HOME
        with contextlib.suppress(OSError):
            os.chown(home, 0, 0)  # a later workload given the same uid must not get in
            os.chmod(home, 0o700)
        error = None
        if oom and (sig == signal.SIGKILL or code == 128 + signal.SIGKILL):
            error = f"killed: out of memory (limit {self.args.mem_mb} MB)"
        elif oom:
            error = f"exited with code {code} after {oom} of its processes were killed: out of memory (limit {self.args.mem_mb} MB)"
        elif sig is not None and not self.stop_requested:
            error = f"killed by signal {sig}"
        reason = error or ("stopped" if self.stop_requested else f"exited with code {code}")
        self.save(status="ended", exit_code=code, signal=sig, oom_kills=oom, error=error, reason=reason,
                  ended_at=time.time())


def _parse(argv: list[str]) -> SimpleNamespace:
    """``--name value`` options and the ``--no-cgroups`` flag (the driver builds the line)."""
    values: dict[str, Any] = {
        "workdir": None, "id": None, "lock_fd": None, "mem_mb": 256, "cpu": 1.0, "pids_max": isolation.PIDS_MAX,
        "log_bytes": DEFAULT_LOG_BYTES, "uid_base": uids.UID_BASE, "uid_count": uids.UID_COUNT,
        "uid_lock_dir": str(uids.UID_LOCK_DIR), "no_cgroups": False, "init": "",
    }
    args = iter(argv)
    for arg in args:
        name = arg.removeprefix("--").replace("-", "_")
        if not arg.startswith("--") or name not in values:
            raise SystemExit(f"hypercore-supervisor: unknown argument {arg!r}")
        if name == "no_cgroups":
            values[name] = True
        else:
            kind = float if name == "cpu" else int if isinstance(values[name], int) or name == "lock_fd" else str
            values[name] = kind(next(args))
    if not values["workdir"] or not values["id"]:
        raise SystemExit("hypercore-supervisor: --workdir and --id are required")
    return SimpleNamespace(**values)


def _answer(state: dict[str, Any]) -> None:
    """The one line the driver waits for; then stdout goes to /dev/null (the agent may be gone)."""
    with contextlib.suppress(OSError):
        os.write(1, json.dumps(state).encode() + b"\n")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    os.close(null)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--zygote"] and (job := (handoff if __package__ else _sibling("handoff")).serve()) is None:
        return 0  # the zygote, told to go; what follows runs in the supervisors it forked
    args = _parse(job[0] if argv == ["--zygote"] else argv)
    os.chdir(args.workdir)
    os.umask(0o077)
    if args.lock_fd is not None:
        os.set_inheritable(args.lock_fd, False)  # held until this process exits; never the workload's
    sup = Supervisor(args)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)

    def request_stop(_sig: int, _frame: object) -> None:
        sup.stop_requested = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, request_stop)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)  # only to wake the loop up
    isolation.become_subreaper()
    try:
        spec = json.loads(job[1] if argv == ["--zygote"] else sys.stdin.buffer.read())
        out = sup.start(spec)
    except Exception as exc:  # the driver refuses the spawn with this message
        sup.cg.remove()
        sup.save(status="failed", error=str(exc) or type(exc).__name__, ended_at=time.time())
        _answer(sup.state)
        return 1
    _answer(sup.state)
    os.set_blocking(out, False)
    sup.supervise(out, wake_r)
    sup.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
