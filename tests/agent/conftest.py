"""Fixtures for the agent tests: a real etcd, and the dataplane tests' kernel test bed.

The kernel fixtures (``netns``: this test's own namespaces, always deleted; ``make_lab``: a
node namespace routing to pod namespaces, its processes always killed) are the ones
``tests/dataplane`` defines, registered here as well.
"""

from __future__ import annotations

import pytest

from tests.dataplane.conftest import netns  # noqa: F401  (fixture)
from tests.dataplane.test_nftables import make_lab  # noqa: F401  (fixture)
from tests.etcd_server import etcd_server  # noqa: F401  (fixture)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root and network namespaces")
