"""The real wiring (store URL → calc graph → nftables) and the ``python -m palisade.agent``
command."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from palisade.calc import build_graph
from palisade.dataplane.linux import NftablesDataplane, RouteManager
from palisade.datastore import DatastoreError, Store, open_store
from palisade.flows import FlowRecord
from palisade.server._client import FlowShipper

from ._agent import Agent, AgentConfig, AgentStatus
from ._flowlog import FlowReporter, FlowTee, GraphTee, Sink, file_sink

log = logging.getLogger("palisade.agent")


def run_agent(
    node: str,
    datastore_url: str,
    netns: str | None = None,
    stop: threading.Event | None = None,
    *,
    config: AgentConfig | None = None,
    status_file: str | os.PathLike[str] | None = None,
    flows: FlowOptions | None = None,
) -> None:
    """Enforce ``node``'s policy from the datastore at ``datastore_url`` until ``stop`` is set
    (or, when called from the main thread, SIGTERM or SIGINT arrives).

    nftables is programmed in ``netns`` (``None``: this process's own namespace); the agent
    process itself stays where it is, so it reaches the datastore over this namespace's
    network. The datastore is opened lazily and retried while it is unreachable. Raises
    ``DatastoreError`` for a malformed URL.

    ``status_file``: keep a JSON file there with the node, the process id, the time and
    :meth:`AgentStatus.as_json` (replaced atomically on every change), for whoever supervises
    agents — ``"programmed": true`` and ``"phase": "watching"`` mean the node enforces the
    store's state at ``"revision"``.

    ``flows``: report flow logs (see :mod:`palisade.agent._flowlog`) to a server, a file, or
    both.
    """
    stop = stop if stop is not None else threading.Event()
    dataplane = NodeDataplane(netns)
    reporter: FlowReporter | None = None
    shipper: FlowShipper | None = None
    graph: Any
    if flows is not None and flows.enabled:
        sinks: list[Sink] = []
        if flows.server:
            spool = Path(flows.spool or f"/var/lib/palisade/flows-{node}")
            shipper = FlowShipper(spool, flows.server, node=node)
            sinks.append(shipper.add)
        if flows.file:
            sinks.append(file_sink(Path(flows.file)))

        def sink(records: list[FlowRecord]) -> None:
            for each in sinks:
                each(records)

        reporter = FlowReporter(
            node,
            netns,
            sink,
            interval=flows.interval,
            allowed_level=flows.allowed_level,
            denied_level=flows.denied_level,
        )
        graph = GraphTee(
            build_graph(node, FlowTee(dataplane.filter, reporter), dataplane.routes), reporter
        )
        reporter.start()
    else:
        graph = build_graph(node, dataplane.filter, dataplane.routes)

    def opener() -> Store:
        return open_store(datastore_url)

    on_status = None if status_file is None else _StatusFile(Path(status_file), node).write
    agent = Agent(opener, graph, dataplane, config, on_status=on_status)
    log.info(
        "agent for node %s: datastore %s, nftables in %s",
        node,
        datastore_url,
        f"netns {netns}" if netns else "this namespace",
    )
    try:
        with _stop_on_signals(stop):
            agent.run(stop)
    finally:
        if reporter is not None:
            reporter.stop()
        if shipper is not None:
            shipper.flush(timeout=5.0)
            shipper.close()
        dataplane.close()


@dataclass(frozen=True)
class FlowOptions:
    """Where the agent's flow logs go: ``server`` (through a spool directory), ``file``
    (Calico NDJSON), every ``interval`` seconds, aggregated at these levels."""

    server: str | None = None
    spool: str | None = None
    file: str | None = None
    interval: float = 15.0
    allowed_level: int = 2
    denied_level: int = 1

    @property
    def enabled(self) -> bool:
        return bool(self.server or self.file)


class NodeDataplane:
    """A node's whole dataplane for the agent: nftables for policy, and the overlay's VXLAN
    device, peers and routes; applied and resynced together."""

    def __init__(self, netns: str | None) -> None:
        self.filter = NftablesDataplane(netns)
        self.routes = RouteManager(netns)

    def apply(self) -> int:
        changed = self.filter.apply()
        if self.routes.dirty:  # a policy change need not open a netlink socket for routes
            changed += self.routes.apply().changes
        return changed

    def resync(self) -> int:
        # The route manager compares with the kernel on every apply, so applying is its resync.
        repaired = self.filter.resync()
        return repaired + self.routes.apply().changes

    def close(self) -> None:
        """End nftables' libnftables thread; the programmed state stays in the kernel."""
        self.filter.close()


class _StatusFile:
    """The agent's status as JSON in a file, replaced atomically (readers never see half)."""

    def __init__(self, path: Path, node: str) -> None:
        self.path = path
        self.node = node
        self._failed = False

    def write(self, status: AgentStatus) -> None:
        document = {"node": self.node, "pid": os.getpid(), "updated": time.time()}
        document.update(status.as_json())
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            partial.write_text(json.dumps(document, indent=2) + "\n")
            os.replace(partial, self.path)
        except OSError as exc:
            if not self._failed:  # once: a full disk must not flood the log
                log.warning("cannot write the status file %s: %s", self.path, exc)
            self._failed = True
        else:
            self._failed = False


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` while inside; only the main thread can take signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def handle(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            # a child pyroute2 forked (to open a socket in a namespace) is being stopped:
            # stop as if the handler were not there
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _parser() -> argparse.ArgumentParser:
    defaults = AgentConfig()
    parser = argparse.ArgumentParser(
        prog="python -m palisade.agent",
        description="Palisade node agent: datastore → calc graph → nftables, until SIGTERM.",
    )
    parser.add_argument("--node", required=True, help="this node's name (Pod spec.nodeName)")
    parser.add_argument(
        "--datastore",
        required=True,
        metavar="URL",
        help="sqlite:///path.db, sqlite:////abs/path.db or etcd://host:port[/prefix]",
    )
    parser.add_argument("--netns", default=None, help="program nftables in this network namespace")
    parser.add_argument(
        "--resync-interval",
        type=float,
        default=defaults.resync_interval,
        metavar="SECONDS",
        help="how often to re-read the kernel's table and repair drift (default %(default)s)",
    )
    parser.add_argument(
        "--apply-interval-ms",
        type=float,
        default=defaults.apply_interval * 1000,
        metavar="MS",
        help="apply the dataplane at most once per this many ms (default %(default)s)",
    )
    parser.add_argument(
        "--status-file",
        default=None,
        metavar="PATH",
        help="keep the agent's status there as JSON (phase, revision, programmed, errors)",
    )
    parser.add_argument("--flow-server", metavar="URL", help="send flow logs to this server")
    parser.add_argument(
        "--flow-spool", metavar="DIR", help="flow batches wait here until the server has them"
    )
    parser.add_argument("--flow-log", metavar="PATH", help="append flow logs (NDJSON) here")
    parser.add_argument(
        "--flow-interval", type=float, default=15.0, metavar="SECONDS", help="default %(default)s"
    )
    parser.add_argument(
        "--flow-levels",
        default="2,1",
        metavar="ALLOWED,DENIED",
        help="aggregation levels (Calico's 0-3) of allowed and denied flows (default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default %(default)s",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m palisade.agent``; returns the exit status (0 after a clean stop)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = AgentConfig(
            apply_interval=args.apply_interval_ms / 1000, resync_interval=args.resync_interval
        )
        allowed_level, denied_level = (int(x) for x in args.flow_levels.split(","))
        flows = FlowOptions(
            server=args.flow_server,
            spool=args.flow_spool,
            file=args.flow_log,
            interval=args.flow_interval,
            allowed_level=allowed_level,
            denied_level=denied_level,
        )
        run_agent(
            args.node,
            args.datastore,
            args.netns,
            config=config,
            status_file=args.status_file,
            flows=flows,
        )
    except (DatastoreError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    return 0
