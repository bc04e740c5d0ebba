"""The CLI tests use the real etcd fixture for the etcd datastore."""

from tests.etcd_server import etcd_server  # noqa: F401  (a fixture, registered by import)
