"""IP address management: per-node blocks carved from IPPools, kept in the datastore.

Each IPPool (spec 2.7) is cut into blocks of ``blockSize`` addresses (default /26 and /122).
A node claims a whole block the first time it needs an address and gets later addresses from
its own blocks, so routes are per block, as in Calico. Each block is one datastore document::

    kind: IPAMBlock                      # apiVersion ipam.palisade.io/v1, cluster-scoped
    metadata: {name: 10-65-0-0-26}       # the CIDR with '.', ':' and '/' as '-'
    spec:
      cidr: 10.65.0.0/26
      pool: default-pool
      affinity: host:node-1              # the node that claimed it
      allocations: {10.65.0.0: <handle>} # address -> handle (CNI: "<containerID>.<ifname>")
      attributes: {<handle>: {node: node-1, namespace: ns, pod: name}}

Pools that are disabled, not for ``Workload`` use, in ``Manual`` assignment mode, or whose
``nodeSelector`` does not match the node's labels (from its ``Node`` document; none: no
labels) are skipped. Blocks of other nodes are not borrowed: when this node's blocks are full
and no unclaimed block is left, allocation fails with :class:`PoolExhausted`. A release frees
every address a handle holds and is idempotent; emptied blocks keep their affinity.

``_core`` is sans-I/O (documents in, a plan of block documents out); :class:`StoreAllocator`
runs the plans against a ``Store`` under a lock, with the concurrency notes in its module.
Left to others: routes per block (the agent), and the CNI protocol (``dataplane.cni``).
"""

from ._allocator import StoreAllocator, lock_path_for
from ._core import (
    BLOCK_API_VERSION,
    BLOCK_KIND,
    Assignment,
    Block,
    ConcurrentUpdate,
    HandleInUse,
    IpamError,
    Plan,
    Pool,
    PoolExhausted,
    block_name,
    eligible_pools,
    find_handle,
    node_affinity,
    plan_assign,
    plan_release,
)

__all__ = [
    "BLOCK_API_VERSION",
    "BLOCK_KIND",
    "Assignment",
    "Block",
    "ConcurrentUpdate",
    "HandleInUse",
    "IpamError",
    "Plan",
    "Pool",
    "PoolExhausted",
    "StoreAllocator",
    "block_name",
    "eligible_pools",
    "find_handle",
    "lock_path_for",
    "node_affinity",
    "plan_assign",
    "plan_release",
]
