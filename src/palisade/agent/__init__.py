"""The node agent: one per node, keeping the node's kernel in step with the datastore.

The loop (:class:`Agent`): list every resource at a store revision, feed the calc graph,
flush once and apply the dataplane; then watch from that revision, feeding each change to the
graph and applying at most once per ``AgentConfig.apply_interval`` (the first change after a
quiet spell at once, a burst as one transaction). Every ``resync_interval`` (90 s by default)
the dataplane re-reads the kernel and repairs drift. A watch that fell behind compaction
(``RevisionCompacted``) leads to a full resync: the store is listed again and compared with
what the graph holds (:class:`ResourceMirror`), so resources that vanished meanwhile become
deletions and unchanged ones cost nothing.

When the datastore is unreachable the agent changes nothing: the last programmed state stays
in the kernel (and keeps being resynced), the outage is logged when it starts (then every tenth
attempt), and the agent retries with capped exponential backoff (a function that opens the
store is called again each time); when the store answers again it relists and catches up. The
dataplane is never flushed because the datastore went away, nor programmed at all before the
first successful list — so an agent restarted during an outage leaves the table a previous run
left (the nftables driver adopts it on its first apply). Stopping leaves the dataplane as it is.

The loop does no I/O of its own; its three collaborators are injected: a ``Store`` (or a
function opening one), a :class:`Graph` (``palisade.calc.CalcGraph``) and a
:class:`DataplaneDriver` (``apply``/``resync``; the graph's callbacks go to the same object),
so it is tested with SQLite and a recording dataplane. One thread runs the loop and alone
touches graph and dataplane; a watcher thread follows the store and queues its events.

:func:`run_agent` wires the real ones — an ``open_store(url)``, ``build_graph(node, …)`` and
``NftablesDataplane(netns)`` — and stops on its ``stop`` event, SIGTERM or SIGINT;
``python -m palisade.agent --node N --datastore URL [--netns NS] [--status-file PATH]`` runs it
as a process (exit status 0 after a clean stop, 2 for a bad URL). :class:`AgentStatus` says
where an agent is (phase, revision, programmed, failures); the status file holds it as JSON
for whoever supervises the agents.

Left to others: what to program (``palisade.calc``), how (``palisade.dataplane.linux``:
nftables for policy, :class:`~palisade.dataplane.linux.RouteManager` for the VXLAN overlay,
applied together by ``NodeDataplane``), storage (``palisade.datastore``). Not done yet: the
agent does not publish its own VXLAN MAC on its Node document (the lab writes the Node
annotations), and flow export.
"""

from ._agent import (
    Agent,
    AgentConfig,
    AgentStatus,
    DataplaneDriver,
    Graph,
    Phase,
    StoreSource,
)
from ._mirror import ResourceMirror, Update
from ._run import main, run_agent

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentStatus",
    "DataplaneDriver",
    "Graph",
    "Phase",
    "ResourceMirror",
    "StoreSource",
    "Update",
    "main",
    "run_agent",
]
