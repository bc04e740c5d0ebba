"""Fixtures for kernel tests: fresh, uniquely named network namespaces, always cleaned up.

Every object a test creates is named with the test's own prefix (``pal-t`` + 6 hex digits),
so teardown can sweep exactly that test's leftovers and nothing else — not other tests' and
not other engineers' lab objects, which share the ``pal`` prefix.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator

import pytest

from palisade.dataplane.linux import create_netns, delete_netns, sweep


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root and network namespaces")


class Namespaces:
    """A test's namespaces: ``a`` and ``b`` made up front, more on demand with :meth:`new`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.created: list[str] = []
        self.a = self.new("a")
        self.b = self.new("b")

    def new(self, suffix: str) -> str:
        name = f"{self.prefix}{suffix}"
        create_netns(name)
        self.created.append(name)
        return name

    def link(self, suffix: str) -> str:
        """A link name carrying this test's prefix (at most 15 characters)."""
        name = f"{self.prefix}{suffix}"
        assert len(name) <= 15, name
        return name


@pytest.fixture
def netns() -> Iterator[Namespaces]:
    if os.geteuid() != 0:
        pytest.fail(
            "tests marked 'root' need root (network namespaces, veth, VXLAN); CI runs as root — "
            "run them with sudo, or deselect them with -m 'not root'",
            pytrace=False,
        )
    if shutil.which("ip") is None and not os.path.exists("/usr/sbin/ip"):
        pytest.fail("iproute2's `ip` is missing: run `make system-deps`", pytrace=False)
    prefix = f"pal-t{secrets.token_hex(3)}"
    namespaces: Namespaces | None = None
    try:
        namespaces = Namespaces(prefix)
        yield namespaces
    finally:
        try:
            for name in reversed(namespaces.created if namespaces else []):
                delete_netns(name)
        finally:
            sweep(prefix)  # this test's prefix only: links it left in the root namespace too
