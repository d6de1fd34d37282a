"""Running workloads on this node: drivers, and the manager that records them."""

from __future__ import annotations

from hypercore.runtime.base import Driver, Handle, RuntimeRefused, WorkloadNotFound
from hypercore.runtime.exec import ExecDriver
from hypercore.runtime.manager import WorkloadManager

__all__ = ["Driver", "ExecDriver", "Handle", "RuntimeRefused", "WorkloadManager", "WorkloadNotFound"]
