"""`palisade agent`: run one node's agent (datastore watch → calc graph → nftables)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from palisade.datastore import DatastoreError

from ._common import datastore_url, fail


def agent(
    node: Annotated[str, typer.Option("--node", help="This node's name (Pods' spec.nodeName).")],
    datastore: Annotated[
        str | None,
        typer.Option("--datastore", help="sqlite:///PATH or etcd://HOST:PORT."),
    ] = None,
    netns: Annotated[
        str | None,
        typer.Option("--netns", help="Program nftables in this network namespace."),
    ] = None,
    status_file: Annotated[
        Path | None, typer.Option("--status-file", help="Keep the agent's status here (JSON).")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "INFO",
) -> None:
    """Enforce a node's policy until SIGTERM/Ctrl-C; keeps enforcing while the datastore is
    unreachable, and leaves its nftables table in place for the next run to adopt."""
    from palisade.agent import run_agent  # imported here: the other commands need no netlink

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    try:
        run_agent(node, datastore_url(datastore), netns, status_file=status_file)
    except DatastoreError as exc:
        fail(str(exc))
