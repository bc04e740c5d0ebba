"""The store-backed allocator: the core's plans, read from and written to a ``Store``.

Concurrency. The ``Store`` protocol has an atomic multi-key ``apply`` but no compare-and-swap,
so a read-modify-write of a block document cannot be made conditional on the revision read.
Three measures take its place:

1. **A lock around every read-plan-write.** It is an exclusive ``flock`` on a lock file
   (:func:`lock_path_for`): for a SQLite datastore ``<database>.ipam.lock`` beside the file
   (every allocator of that datastore is on this machine, so this serialises all of them);
   for any other datastore the host-wide ``/run/palisade/ipam.lock``, as Calico's CNI plugin
   holds its per-host IPAM lock. Allocators in one process hold separate file descriptions,
   so they exclude each other too. A node only ever writes addresses into blocks with its own
   affinity, so with the host lock no two writers touch one block's allocations.
2. **Block claims that need no compare-and-swap.** What nodes on different machines can
   contend for is a free block. Before writing a new block, a node puts a claim document
   (``IPAMBlockClaim``, one per block and node) and lists the block's claims: the claim with
   the lowest store revision wins, the others delete theirs and pick another block. Revisions
   are strictly increasing and reads see every earlier commit, so at most one claimant wins
   (ZooKeeper's sequential-node recipe). A node that dies between claim and block write
   leaves that block unusable (leaked, as a crashed Calico node's affinity is).
3. **Optimistic checks on top.** Just before writing, each block about to be written is
   read again and its revision compared with the one the plan was made from; after writing,
   the allocation is read back. A mismatch drops the plan and starts again from a fresh read
   (up to ``retries`` times).

Limitation: correctness across machines rests on every writer of a node's blocks running on
that node (so the host lock covers them). A release for a handle in another node's block
(not something CNI does) is only protected by the optimistic check, which leaves a window of
one round trip. A Store write with a revision precondition (etcd's ``txn`` compare on
``mod_revision``) would close it and would replace measures 1 and 2 for blocks.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from palisade.datastore import ResourceKey, Store, StoredResource

from ._core import (
    BLOCK_API_VERSION,
    BLOCK_KIND,
    NODE_KIND,
    POOL_KIND,
    Assignment,
    Block,
    ConcurrentUpdate,
    Plan,
    Pool,
    find_handle,
    node_affinity,
    plan_assign,
    plan_release,
)

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


HOST_LOCK_PATH = "/run/palisade/ipam.lock"
CLAIM_KIND = "IPAMBlockClaim"


def lock_path_for(datastore_url: str) -> str | None:
    """The IPAM lock file for a datastore URL.

    SQLite file: beside the database; in-memory SQLite: ``None`` (one process, a thread lock
    is enough); anything else: the host-wide :data:`HOST_LOCK_PATH`.
    """
    scheme, sep, rest = datastore_url.partition("://")
    if sep and scheme.lower() == "sqlite":
        if not rest.startswith("/"):
            return None
        return os.path.abspath(rest[1:]) + ".ipam.lock"
    return HOST_LOCK_PATH


def block_key(name: str) -> ResourceKey:
    return ResourceKey(BLOCK_KIND, None, name)


class StoreAllocator:
    """Allocates workload addresses for one node from the IP pools in ``store``.

    ``lock_path`` names the lock file shared by every allocator of this datastore (see
    :func:`lock_path_for`); without one, only allocators in this process are serialised.
    """

    def __init__(
        self,
        store: Store,
        node: str,
        *,
        lock_path: str | None = None,
        retries: int = 20,
    ) -> None:
        self.store = store
        self.node = node
        self.lock_path = lock_path
        self.retries = retries
        lock_id = lock_path or f"store-{id(store)}"
        with _THREAD_LOCKS_GUARD:
            self._thread_lock = _THREAD_LOCKS.setdefault(lock_id, threading.Lock())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            if self.lock_path is None:
                yield
                return
            os.makedirs(os.path.dirname(self.lock_path) or ".", exist_ok=True)
            descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                yield
            finally:
                os.close(descriptor)  # closing releases the flock

    # -- reads --------------------------------------------------------------------------------

    def _pools(self) -> list[Pool]:
        return [Pool.from_document(r.value) for r in self.store.list(POOL_KIND)]

    def _blocks(self) -> dict[str, StoredResource]:
        return {r.key.name: r for r in self.store.list(BLOCK_KIND)}

    def node_labels(self) -> dict[str, str]:
        """The labels of this node's Node document (none if it has none)."""
        stored = self.store.get(ResourceKey(NODE_KIND, None, self.node))
        if stored is None:
            return {}
        labels = (stored.value.get("metadata") or {}).get("labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    def blocks(self) -> list[Block]:
        """Every block in the datastore."""
        return [Block.from_document(r.value) for r in self._blocks().values()]

    def assignments(self, handle: str) -> list[Assignment]:
        """The addresses ``handle`` holds."""
        return find_handle(self.blocks(), handle)

    def attributes(self, handle: str) -> dict[str, str] | None:
        """What was recorded with ``handle`` when it was assigned, or ``None``."""
        for block in self.blocks():
            if handle in block.attributes:
                return dict(block.attributes[handle])
        return None

    def node_handles(self) -> dict[str, dict[str, str]]:
        """Handles holding addresses in this node's blocks, with their attributes."""
        found: dict[str, dict[str, str]] = {}
        for block in self.blocks():
            for handle in block.handles():
                attributes = dict(block.attributes.get(handle, {}))
                if attributes.get("node", self.node) == self.node:
                    found[handle] = attributes
        return found

    # -- writes -------------------------------------------------------------------------------

    def assign(
        self, handle: str, attributes: Mapping[str, str] | None = None, version: int = 4
    ) -> Assignment:
        """One address of family ``version`` for ``handle``; raises ``PoolExhausted``."""
        recorded = {"node": self.node, **(attributes or {})}

        def plan(blocks: list[Block]) -> Plan:
            return plan_assign(
                blocks, self._pools(), self.node, self.node_labels(), handle, recorded, version
            )

        assignments = self._update(plan)
        return assignments[0]

    def release(self, handle: str) -> list[Assignment]:
        """Free what ``handle`` holds; returns what was freed (empty: nothing; idempotent)."""
        return self._update(lambda blocks: plan_release(blocks, handle))

    def _update(self, make_plan: Callable[[list[Block]], Plan]) -> list[Assignment]:
        with self._locked():
            for _ in range(self.retries):
                read = self._blocks()
                blocks = [Block.from_document(r.value) for r in read.values()]
                plan = make_plan(blocks + self._foreign_claims(read))
                if not plan.writes:
                    return list(plan.assignments)
                if not self._unchanged(read, plan.writes):
                    continue
                new = [b for b in plan.writes if b.name not in read]
                if not all(self._claim(block) for block in new):
                    continue
                self.store.apply([(block_key(b.name), b.to_document()) for b in plan.writes])
                if self._written(plan.writes):
                    return list(plan.assignments)
        raise ConcurrentUpdate(
            f"IPAM blocks kept changing under node {self.node}'s allocator; "
            f"gave up after {self.retries} attempts"
        )

    def _foreign_claims(self, read: dict[str, StoredResource]) -> list[Block]:
        """Blocks other nodes have claimed but not written yet, as empty blocks of theirs."""
        found: list[Block] = []
        for claim in self.store.list(CLAIM_KIND):
            spec = claim.value.get("spec") or {}
            if spec.get("node") == self.node or spec.get("block") in read:
                continue
            cidr = ipaddress.ip_network(str(spec.get("cidr")))
            found.append(Block(cidr, "", node_affinity(str(spec.get("node")))))
        return found

    def _claim(self, block: Block) -> bool:
        """Claim a block no document exists for yet; ``True`` if this node won it."""
        key = ResourceKey(CLAIM_KIND, None, f"{block.name}.{self.node}")
        document = {
            "apiVersion": BLOCK_API_VERSION,
            "kind": CLAIM_KIND,
            "metadata": {"name": key.name},
            "spec": {"block": block.name, "cidr": str(block.cidr), "node": self.node},
        }
        self.store.put(key, document)
        claims = [
            c
            for c in self.store.list(CLAIM_KIND)
            if (c.value.get("spec") or {}).get("block") == block.name
        ]
        winner = min(claims, key=lambda c: (c.revision, c.key.name), default=None)
        if winner is not None and winner.key == key:
            return True
        self.store.delete(key)
        return False

    def _unchanged(self, read: dict[str, StoredResource], writes: tuple[Block, ...]) -> bool:
        for block in writes:
            before = read.get(block.name)
            now = self.store.get(block_key(block.name))
            if (before.revision if before else None) != (now.revision if now else None):
                return False
        return True

    def _written(self, writes: tuple[Block, ...]) -> bool:
        for block in writes:
            now = self.store.get(block_key(block.name))
            if now is None or Block.from_document(now.value).allocations != block.allocations:
                return False
        return True
