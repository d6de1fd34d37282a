from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypercore.devcluster import Cluster

if shutil.which("serf") is None:
    pytest.skip("the serf binary is not installed (apt-get install serf; `make test` does it)", allow_module_level=True)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three exec nodes with different prices and reputations, shared by a module's tests."""
    c = Cluster(tmp_path_factory.mktemp("trio"))
    try:
        exec_only = ("--enable-exec", "--disable-containers")
        c.add("cheap", *exec_only, "--beacon-price", "0.006", "--beacon-reputation", "0.70")
        c.add("mid", *exec_only, "--beacon-price", "0.020", "--beacon-reputation", "0.93")
        c.add("trusted", *exec_only, "--beacon-price", "0.040", "--beacon-reputation", "0.99")
        c.wait_converged()
        yield c
    finally:
        c.close()
