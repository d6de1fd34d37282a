"""A uid of its own per exec workload (hypercore.runtime.uids): real processes, real cgroups, run as root.

A uid is handed out only if no account, account's containers, live workload or leftover process has it.
Leftovers are looked for in the cgroup the uid's last workload named in its lock file, so a start does not
read the machine's process table (10 ms at the 570 processes of a 100-node bench); only a lock file that
names no cgroup (an older version's, or a workload without cgroups) costs that read.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hypercore.runtime.cgroups as cgroups
import hypercore.runtime.isolation as isolation
import hypercore.runtime.uids as uids

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="uids and cgroups need root")


class Counting:
    """``in_use`` that counts how often the process table was read."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> set[int]:
        self.calls += 1
        return isolation.used_uids()


def as_uid(uid: int, join: list[Path] = ()) -> Callable[[], None]:  # type: ignore[assignment]
    def child() -> None:
        for path in join:
            path.write_text("0")
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    return child


def wait_zombie(pid: int) -> None:
    deadline = time.monotonic() + 5
    while isolation.read_proc_stat(pid).state != "Z" and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.01)


@pytest.fixture
def workload_cgroup() -> Iterator[cgroups.Cgroups]:
    cg = cgroups.cgroups_for(f"uidtest-{uuid.uuid4().hex[:12]}", 64, 0.5, 16)
    if not cg.dirs:
        pytest.skip("no cgroup controller can be used on this machine")
    try:
        yield cg
    finally:
        isolation.end_remains(pgid=None, uid=None, cg=cg, grace=0.2)


def test_uids_of_accounts_are_never_used(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    lease = uids.allocate_uid("test", isolation.used_uids, base=nobody, count=3, lock_dir=tmp_path)
    try:
        assert lease.uid != nobody and lease.uid > nobody
        with pytest.raises(KeyError):
            pwd.getpwuid(lease.uid)
        # Held: a second allocation from the same range gets another uid.
        second = uids.allocate_uid("test2", isolation.used_uids, base=nobody, count=3, lock_dir=tmp_path)
        assert second.uid not in (nobody, lease.uid)
        os.close(second.fd)
    finally:
        os.close(lease.fd)


def test_a_leftover_in_the_last_workloads_cgroup_keeps_its_uid(tmp_path: Path,
                                                                workload_cgroup: cgroups.Cgroups) -> None:
    # The supervisor that held the uid died (its lock is free); the process its workload left did not. It
    # was born in the workload's cgroup (it joined before taking the uid) and cannot leave it: the next
    # allocation finds it there, without reading the process table.
    base = uids.UID_BASE + uids.UID_COUNT - 60  # outside what other tests allocate
    in_use = Counting()
    lease = uids.allocate_uid("first", in_use, base=base, count=3, lock_dir=tmp_path, subordinate=())
    assert lease.uid == base
    lease.record(workload_cgroup)
    assert (tmp_path / str(base)).read_text().splitlines()[1] == f"cgroup {workload_cgroup.procs_files()[0].parent}"
    leftover = subprocess.Popen(["sleep", "30"], preexec_fn=as_uid(base, workload_cgroup.join_files()))
    os.close(lease.fd)  # the supervisor is gone
    try:
        assert leftover.pid in workload_cgroup.pids()
        again = uids.allocate_uid("second", in_use, base=base, count=3, lock_dir=tmp_path, subordinate=())
        assert again.uid == base + 1
        os.close(again.fd)
    finally:
        leftover.kill()
        leftover.wait()
    assert in_use.calls == 0
    # Its cgroup now empty (and then removed): the uid is free again, still without the process table.
    for cg_dirs_left in (True, False):
        if not cg_dirs_left:
            assert workload_cgroup.remove()
        lease = uids.allocate_uid("third", in_use, base=base, count=3, lock_dir=tmp_path, subordinate=())
        assert lease.uid == base
        lease.record(workload_cgroup)
        os.close(lease.fd)
    assert in_use.calls == 0


def test_a_lock_file_that_names_no_cgroup_is_checked_against_every_process(tmp_path: Path) -> None:
    # A lock file from before the cgroup record (or of a workload without cgroups, or a supervisor that died
    # before its cgroups existed) says nothing of leftovers: then every process's uids are read (once). A
    # live leftover and a zombie (not reaped yet) each keep their uid from the next workload.
    base = uids.UID_BASE + uids.UID_COUNT - 40
    for offset, content in ((0, "old-workload 4242\n"), (1, "other 4243\ncgroup none\n"), (2, "")):
        (tmp_path / str(base + offset)).write_text(content)
    leftover = subprocess.Popen(["sleep", "30"], preexec_fn=as_uid(base))
    zombie = subprocess.Popen(["true"], preexec_fn=as_uid(base + 1))
    in_use = Counting()
    try:
        wait_zombie(zombie.pid)
        lease = uids.allocate_uid("test", in_use, base=base, count=3, lock_dir=tmp_path, subordinate=())
        try:
            assert lease.uid == base + 2
            assert in_use.calls == 1  # one read for the three
        finally:
            os.close(lease.fd)
    finally:
        leftover.kill()
        leftover.wait()
        zombie.wait()
    lease = uids.allocate_uid("test", in_use, base=base, count=3, lock_dir=tmp_path, subordinate=())
    assert lease.uid == base
    os.close(lease.fd)


def test_fresh_and_recorded_uids_cost_no_read_of_the_process_table(tmp_path: Path) -> None:
    # Every start read every process's uids: O(processes on the machine) on the way of every spawn. A uid
    # with no lock file since boot (/run) was never a workload's; one whose last workload's cgroup is gone
    # has nothing left.
    base = uids.UID_BASE + uids.UID_COUNT - 70
    in_use = Counting()
    held = [uids.allocate_uid(f"w{i}", in_use, base=base, count=5, lock_dir=tmp_path, subordinate=())
            for i in range(3)]
    assert [lease.uid for lease in held] == [base, base + 1, base + 2]
    gone = cgroups.Cgroups({"pids": tmp_path / "no-such-cgroup"})
    for lease in held:
        lease.record(gone)
        os.close(lease.fd)
    again = uids.allocate_uid("w3", in_use, base=base, count=5, lock_dir=tmp_path, subordinate=())
    assert again.uid == base
    os.close(again.fd)
    assert in_use.calls == 0
    # A file someone else made in the moment between our two opens is not taken for a fresh one.
    fd, fresh = uids._open_lock(tmp_path / str(base + 4))
    fd2, fresh2 = uids._open_lock(tmp_path / str(base + 4))
    assert fresh and not fresh2
    os.close(fd)
    os.close(fd2)


def test_subordinate_ids_of_accounts_are_never_used(tmp_path: Path) -> None:
    # An account's container processes run as its subordinate uids and gids in a user namespace of its own; a
    # workload given one (its gid is its uid) could signal those processes or reach their group's files.
    base = uids.UID_BASE + uids.UID_COUNT - 50
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    # Fields may carry spaces; a count or start that is no plain number ("²" passes str.isdigit) is skipped.
    subuid.write_text(f"alice:{base}:2\nbroken line\nbob:x:y\ncarol:\u00b2:1\n# comment\n")
    subgid.write_text(f"dave: {base + 2} : 1\n")
    assert uids.subordinate_ids((subuid, subgid)) == [range(base, base + 2), range(base + 2, base + 3)]
    lease = uids.allocate_uid("test", isolation.used_uids, base=base, count=5, lock_dir=tmp_path / "locks",
                              subordinate=(subuid, subgid))
    try:
        assert lease.uid == base + 3
    finally:
        os.close(lease.fd)
    assert uids.subordinate_ids((tmp_path / "missing",)) == []
    with pytest.raises(uids.UidError, match="subordinate id.*--exec-uid-base"):
        uids.allocate_uid("test", isolation.used_uids, base=base, count=3, lock_dir=tmp_path / "locks",
                          subordinate=(subuid, subgid))
