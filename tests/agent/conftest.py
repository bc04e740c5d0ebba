"""Fixtures for the agent tests: a real etcd, and the dataplane tests' kernel test bed.

``netns`` (this test's own namespaces, always deleted) is the fixture ``tests/dataplane``
defines, registered here as well; ``test_kernel`` imports that directory's ``make_lab``
itself, since importing its test module here would evaluate ``pytest.mark.root`` before
``pytest_configure`` below has registered the marker.
"""

from __future__ import annotations

import pytest

from tests.dataplane.conftest import netns  # noqa: F401  (fixture)
from tests.etcd_server import etcd_server  # noqa: F401  (fixture)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root and network namespaces")
