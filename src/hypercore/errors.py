"""The root of hypercore's error hierarchy.

Every error a user can cause derives from HypercoreError, so the CLI and the
HTTP API can turn it into a clear message (and an exit code or 4xx status)
instead of a traceback.
"""

from __future__ import annotations


class HypercoreError(Exception):
    """Base class of every error hypercore raises on purpose."""
