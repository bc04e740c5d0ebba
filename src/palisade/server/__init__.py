"""``palisade server``: the REST API over the datastore and the DuckDB flow store.

See :mod:`palisade.server._app` for the endpoints, and :mod:`palisade.server._client` for the
client agents and commands use (batches spooled on disk, sent, acknowledged, retried).
"""

from ._app import API, ServerConfig, ServerState, create_app, parse_duration
from ._client import FlowShipper, ServerClient, ServerError

__all__ = [
    "API",
    "FlowShipper",
    "ServerClient",
    "ServerConfig",
    "ServerError",
    "ServerState",
    "create_app",
    "parse_duration",
]
