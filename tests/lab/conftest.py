"""Fixtures for the lab tests: a lab id and state directory of the test's own, always taken
down after the test (whatever state it was left in)."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from palisade import lab


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root and network namespaces")


@dataclass(frozen=True)
class LabPlace:
    """Where a test's lab lives: its id (namespaces ``pal-l<id>-…``) and state directory."""

    lab_id: str
    state_dir: Path

    @property
    def prefix(self) -> str:
        return lab.lab_prefix(self.lab_id)


@pytest.fixture
def lab_place(tmp_path: Path) -> Iterator[LabPlace]:
    if os.geteuid() != 0:
        pytest.fail(
            "tests marked 'root' need root (network namespaces, nftables); CI runs as root — "
            "run them with sudo, or deselect them with -m 'not root'",
            pytrace=False,
        )
    if shutil.which("ip") is None and not os.path.exists("/usr/sbin/ip"):
        pytest.fail("iproute2's `ip` is missing: run `make system-deps`", pytrace=False)
    place = LabPlace(f"t{secrets.token_hex(3)}", tmp_path / "lab")
    try:
        yield place
    finally:
        lab.down(place.state_dir)


from tests.server.conftest import server_process  # noqa: E402, F401  (a real server for flows)
