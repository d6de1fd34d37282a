from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hypercore.devcluster import Cluster

HERE = Path(__file__).parent


# Every test here runs real serf agents. Marked from this conftest so no test
# file can forget it; tests/conftest.py skips (or, under
# HYPERCORE_REQUIRE_REAL=1, fails) each of them when serf is missing.
# tryfirst: before `-m` deselection, which must see these markers.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.serf)


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
