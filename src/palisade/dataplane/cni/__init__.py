"""The CNI plugin ``palisade-cni``: a pod's veth pair, its address and its endpoint record.

A container runtime runs the plugin once per command with the network configuration on stdin
and the request in ``CNI_*`` variables (CNI specification 1.0; GC and STATUS from 1.1)::

    {"cniVersion": "1.0.0", "name": "palisade", "type": "palisade-cni",
     "datastore": "sqlite:////var/lib/palisade/store.db", "nodename": "node-1", "mtu": 1450}

``CNI_NETNS`` must be a named namespace (``/var/run/netns/NAME``), and ``CNI_ARGS`` must carry
``K8S_POD_NAMESPACE`` and ``K8S_POD_NAME`` for ADD and CHECK (DEL finds them in IPAM).

- **ADD** takes an address from IPAM (``palisade.dataplane.ipam``; handle
  ``<CNI_CONTAINERID>.<CNI_IFNAME>``), creates the veth pair (host end named
  ``palisade.calc.workload_interface_name(ns, pod)``, pod end ``CNI_IFNAME``), routes the pod
  through the link-local gateway 169.254.1.1 (a static neighbour in the pod, proxy ARP on the
  host end, as Calico does), adds a ``/32`` route with protocol 154 on the node, records the
  endpoint in the Pod document (``status.podIP``/``podIPs``, ``spec.nodeName``, annotations
  ``palisade.io/containerID`` and ``palisade.io/interface``) and prints the result. Any failure
  rolls back what it had done. A second ADD of an attached container fails (code 100) and
  changes nothing.
- **DEL** removes the veth (its routes and neighbours go with it), releases the address and
  takes back the Pod record. Idempotent; a vanished namespace is no error.
- **CHECK** verifies the interfaces, address, routes, IPAM allocation and record (and
  ``prevResult``'s addresses if given); any difference is error 102.
- **VERSION** prints the supported versions; **GC** deletes this node's attachments missing
  from ``cni.dev/valid-attachments``; **STATUS** fails (50) without a usable IP pool.

Errors are the specification's object ``{cniVersion, code, msg, details}`` on stdout with exit
status 1. Codes: 1 incompatible version, 2 unsupported field (a foreign ``ipam`` type), 3 the
namespace does not exist, 4 bad or missing ``CNI_*`` variables, 5 a kernel operation failed,
6 configuration is not JSON, 7 invalid configuration, 11 datastore unreachable (try again
later), 50 not ready (STATUS); Palisade's: 100 already attached, 101 no free address, 102 CHECK
found a difference, 103 datastore content unusable.

Left to others: programming policy (the agent and ``dataplane.linux`` nftables), per-block
routes between nodes, IPv6 addresses (IPAM supports IPv6 pools; the plugin assigns IPv4 only).
"""

import os
import sys

from ._plugin import add, check, delete, run
from ._protocol import SUPPORTED_VERSIONS, CniError, ErrorCode, NetConf, Request


def main() -> None:
    """The ``palisade-cni`` executable."""
    sys.exit(run(sys.stdin.read(), os.environ, sys.stdout))


__all__ = [
    "SUPPORTED_VERSIONS",
    "CniError",
    "ErrorCode",
    "NetConf",
    "Request",
    "add",
    "check",
    "delete",
    "main",
    "run",
]
