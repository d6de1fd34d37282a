from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


# Every test here runs real serf agents in network namespaces; tests/conftest.py skips (or, under
# HYPERCORE_REQUIRE_REAL=1, fails) them when serf is missing. Not being root is a skip, said in the test.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.serf)
