"""Fixtures of the identity tests: real CAs, certificates and keys in tmp_path (no mocks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hypercore.identity import NodeIdentity, create_ca, create_node_cert


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    create_ca(tmp_path / "ca")
    return tmp_path / "ca"


@pytest.fixture
def other_ca_dir(tmp_path: Path) -> Path:
    create_ca(tmp_path / "other-ca")
    return tmp_path / "other-ca"


@pytest.fixture
def make_node(ca_dir: Path, tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """make_node(name, ca=ca_dir, **kwargs) -> (cert, key) under tmp_path/certs."""

    def make(name: str, ca: Path | None = None, **kwargs) -> tuple[Path, Path]:
        return create_node_cert(ca or ca_dir, name, tmp_path / "certs", **kwargs)

    return make


@pytest.fixture
def load_node(ca_dir: Path, make_node) -> Callable[..., NodeIdentity]:
    """load_node(name) -> a NodeIdentity freshly issued by ca_dir."""

    def load(name: str, **kwargs) -> NodeIdentity:
        cert, key = make_node(name, **kwargs)
        return NodeIdentity.load(ca_dir / "ca.pem", cert, key, name)

    return load
