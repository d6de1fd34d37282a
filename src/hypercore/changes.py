"""A version that grows with every change, and what the latest changes were about.

For readers that keep something derived from a changing collection (the
placing node's arrays of probe figures and coordinates: placement.links) and
bring it up to date from the names that changed, instead of building it anew.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

KEPT = 4096  # changes remembered; a reader further behind builds anew


class ChangeLog:
    def __init__(self, kept: int = KEPT) -> None:
        self.version = 0
        self._changes: deque[tuple[int, str]] = deque(maxlen=kept)  # (version, name), oldest first

    def changed(self, name: str) -> None:
        self.version += 1
        self._changes.append((self.version, name))

    def since(self, version: int) -> list[str] | None:
        """The names changed after `version`, oldest first; None when that is too long ago to tell."""
        if version == self.version:
            return []
        if version > self.version or not self._changes or self._changes[0][0] > version + 1:
            return None
        # Versions are consecutive: the newest (self.version - version) entries, read from the end.
        newest = [name for _, name in islice(reversed(self._changes), self.version - version)]
        newest.reverse()
        return newest
