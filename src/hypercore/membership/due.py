"""When a member's view can change by itself, with nothing new from Serf: the view re-checks only those.

A view depends on the clock in four ways. A fresh beacon goes stale once it is older than the age limit;
the limit grows and shrinks with the cluster (hypercore.beacon.tags.max_age), so a stale beacon can also
be fresh again after the cluster grew; an admission ends at its `not_after`; a beacon stamped ahead of
our clock passes once the clock comes near it. The first two depend on the limit of the moment of
reading, so beacons are kept in order of their timestamps (the oldest fresh one first, the youngest
stale one first) and compared with the limit of the read; the others are moments.

Every view used to be checked again every 30 s: at 10,000 members a pass of 59 ms each 30 s per node
(bench/view.py). Here a read costs a look at three heap tops, and a member is re-checked when its own
verdict may have flipped. Entries are not removed when a member changes (a heap cannot do that
cheaply): an entry whose timestamp is not the member's beacon's any more is dropped when it comes up,
and the heaps are built again from the members when they hold many more entries than members.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from hypercore.beacon.tags import Beacon, BeaconInvalid

# An admitted member whose beacon is stale is reported again this often (reputation evidence, counted at
# most once per bucket: hypercore.reputation.service.Reputation.observe_once).
STALE_REPORT_S = 30.0


class DueChecks:
    def __init__(self) -> None:
        self._ageing: list[tuple[float, str]] = []  # (beacon timestamp, member): fresh when last checked
        self._revived: list[tuple[float, str]] = []  # (−timestamp, member): stale by age when last checked
        self._timed: list[tuple[float, str]] = []  # (moment, member): an admission ends, an early beacon passes

    def __len__(self) -> int:
        return len(self._ageing) + len(self._revived) + len(self._timed)

    def clear(self) -> None:
        self._ageing, self._revived, self._timed = [], [], []

    def schedule(self, name: str, beacon: Beacon | BeaconInvalid, now: float, limit: float,
                 report_stale: bool) -> None:
        """After a check of member `name`, whose beacon verified as `beacon` (age aside), at `now` with the age
        limit `limit`: when to check it again. `report_stale`: it is stale and admitted, and must be reported
        again."""
        if isinstance(beacon, BeaconInvalid):
            if beacon.until is not None:
                heapq.heappush(self._timed, (beacon.until, name))
            return
        if now - beacon.timestamp > limit:
            heapq.heappush(self._revived, (-beacon.timestamp, name))
            if report_stale:
                heapq.heappush(self._timed, (now + STALE_REPORT_S, name))
        else:
            heapq.heappush(self._ageing, (beacon.timestamp, name))
        if beacon.admission is not None and now < beacon.admission.not_after:
            heapq.heappush(self._timed, (float(beacon.admission.not_after), name))

    def any_due(self, now: float, limit: float) -> bool:
        return bool((self._ageing and now - self._ageing[0][0] > limit)
                    or (self._revived and now + self._revived[0][0] <= limit)
                    or (self._timed and self._timed[0][0] <= now))

    def take_due(self, now: float, limit: float, timestamp_of: Callable[[str], float | None]) -> set[str]:
        """The members to check again now; `timestamp_of(name)`: the timestamp of its beacon as it verified
        (None: no beacon), against which an entry of an earlier beacon is told apart."""
        due: set[str] = set()
        while self._ageing and now - self._ageing[0][0] > limit:
            ts, name = heapq.heappop(self._ageing)
            if timestamp_of(name) == ts:
                due.add(name)
        while self._revived and now + self._revived[0][0] <= limit:
            negative, name = heapq.heappop(self._revived)
            if timestamp_of(name) == -negative:
                due.add(name)
        while self._timed and self._timed[0][0] <= now:
            due.add(heapq.heappop(self._timed)[1])
        return due

    def too_large(self, members: int) -> bool:
        """Far more entries than members (every change of a member leaves its earlier entries behind): time
        to clear the heaps and schedule every member anew."""
        return len(self) > 4 * members + 64
