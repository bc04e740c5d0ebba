"""The Linux dataplane: the netlink driver (links, addresses, routes, neighbours, VXLAN FDB,
namespaces) and the nftables driver that enforces the calc graph's intents.

Every netlink call Palisade makes lives in this package's private modules; callers see small
frozen dataclasses (:class:`Link`, :class:`Address`, :class:`Route`, :class:`Neighbour`,
:class:`FdbEntry`) and one exception type, :class:`NetlinkError`. A :class:`Netlink` object is
bound to one network namespace (``None``: the caller's own) and is a context manager::

    create_netns("pal-node1")
    with Netlink("pal-node1") as nl:
        nl.create_veth("pal-v0", "eth0", peer_netns="pal-pod1")
        nl.set_up("pal-v0")
        nl.add_route(Route(ip_network("10.65.1.0/24"), None, "pal-v0"))

Ownership: whatever Palisade creates is marked as its own so it can be adopted or swept —
names (namespaces, links) start with :data:`PREFIX` and routes carry the protocol number
:data:`RTPROT_PALISADE`. :func:`sweep` and :func:`sweep_links` remove only objects whose
name has the prefix; :func:`sweep_routes` only routes with Palisade's protocol.

Packet filtering: :class:`NftablesDataplane` implements ``palisade.calc.DataplaneCallbacks``,
renders the intents into one table of Palisade's own (``inet palisade``) and applies the
smallest change as one atomic ``nft -j`` transaction; the chain layout is described in
``_nft_render``.

Left to others: deciding what to program (``palisade.calc``, the agent), address allocation
(IPAM) and the CNI protocol. The netlink driver keeps no desired state and does not retry; a
driver above it compares desired and actual state using :meth:`Netlink.links`,
:meth:`Netlink.routes` and friends.
"""

from typing import TYPE_CHECKING, Any

from palisade.dataplane.linux._model import (
    PREFIX,
    RTPROT_PALISADE,
    Address,
    FdbEntry,
    Link,
    Neighbour,
    NetlinkError,
    Route,
)
from palisade.dataplane.linux._netlink import (
    Netlink,
    SweepResult,
    sweep,
    sweep_links,
    sweep_routes,
)
from palisade.dataplane.linux._netns import (
    create_netns,
    delete_netns,
    list_netns,
    netns_exists,
    run_in_netns,
)

if TYPE_CHECKING:
    from palisade.dataplane.linux._nftables import NftablesDataplane, NftablesError, RuleCounter
    from palisade.dataplane.linux._routes import RouteManager

# The nftables and overlay drivers import the calc graph (and through it the policy engine);
# they load on first use, so the netlink part stays light for the CNI plugin, which starts
# once per pod.
_LAZY = {
    "NftablesDataplane": "_nftables",
    "NftablesError": "_nftables",
    "RuleCounter": "_nftables",
    "RouteManager": "_routes",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "PREFIX",
    "RTPROT_PALISADE",
    "Address",
    "FdbEntry",
    "Link",
    "Neighbour",
    "Netlink",
    "NetlinkError",
    "NftablesDataplane",
    "NftablesError",
    "Route",
    "RouteManager",
    "RuleCounter",
    "SweepResult",
    "create_netns",
    "delete_netns",
    "list_netns",
    "netns_exists",
    "run_in_netns",
    "sweep",
    "sweep_links",
    "sweep_routes",
]
