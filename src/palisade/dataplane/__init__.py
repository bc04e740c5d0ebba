"""The dataplane: what turns the calculation graph's intents into kernel state.

``palisade.dataplane.linux`` is the Linux driver layer. Today it holds the netlink driver
(links, addresses, routes, neighbours, VXLAN FDB, network namespaces) that the CNI plugin, the
node agent and the lab build on. Deciding *what* to program is left to ``palisade.calc``;
packet filtering (nftables), IPAM and the CNI protocol live in their own packages.
"""
