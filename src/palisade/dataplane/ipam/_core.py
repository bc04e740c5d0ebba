"""The sans-I/O core of IPAM: pools and blocks in, an allocation plan out.

Nothing here reads or writes the datastore: :func:`plan_assign` and :func:`plan_release` take
the documents as read and return the block documents to write. The store-backed allocator in
``_allocator`` supplies the reads, the writes and the concurrency control.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from palisade.selector import SelectorError, parse

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Kind and apiVersion of the per-block document Palisade keeps in the datastore.
BLOCK_KIND = "IPAMBlock"
BLOCK_API_VERSION = "ipam.palisade.io/v1"
POOL_KIND = "IPPool"
NODE_KIND = "Node"

DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
DEFAULT_ALLOWED_USES = ("Workload", "Tunnel")


class IpamError(RuntimeError):
    """An allocation that cannot be made, or IPAM state that cannot be read."""


class PoolExhausted(IpamError):
    """No eligible pool has a free address for this node."""


class HandleInUse(IpamError):
    """The handle already holds an address of the family asked for (a duplicate request)."""


class ConcurrentUpdate(IpamError):
    """Another allocator changed a block between our read and our write; read and try again."""


@dataclass(frozen=True, slots=True)
class Pool:
    """The parts of an IPPool that allocation needs."""

    name: str
    cidr: IPNetwork
    block_size: int
    node_selector: str
    disabled: bool
    allowed_uses: tuple[str, ...]
    manual: bool

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Pool:
        metadata = document.get("metadata") or {}
        spec = document.get("spec") or {}
        name = str(metadata.get("name") or "")
        try:
            cidr = ipaddress.ip_network(str(spec.get("cidr")), strict=True)
        except ValueError as exc:
            raise IpamError(f"IPPool {name}: bad cidr {spec.get('cidr')!r}: {exc}") from None
        block_size = spec.get("blockSize")
        if block_size is None:
            block_size = DEFAULT_BLOCK_SIZE[cidr.version]
        if (
            not isinstance(block_size, int)
            or not cidr.prefixlen <= block_size <= cidr.max_prefixlen
        ):
            raise IpamError(
                f"IPPool {name}: blockSize {block_size!r} does not fit in {cidr} "
                f"(between {cidr.prefixlen} and {cidr.max_prefixlen})"
            )
        uses = spec.get("allowedUses") or DEFAULT_ALLOWED_USES
        return cls(
            name=name,
            cidr=cidr,
            block_size=block_size,
            node_selector=str(spec.get("nodeSelector") or "all()"),
            disabled=bool(spec.get("disabled", False)),
            allowed_uses=tuple(str(use) for use in uses),
            manual=spec.get("assignmentMode") == "Manual",
        )

    def selects(self, node_labels: Mapping[str, str]) -> bool:
        """Whether the pool's nodeSelector matches a node with these labels."""
        try:
            return parse(self.node_selector).matches(node_labels)
        except SelectorError as exc:
            raise IpamError(f"IPPool {self.name}: bad nodeSelector: {exc}") from None

    def blocks(self) -> Iterator[IPNetwork]:
        """The pool's blocks, lowest first."""
        return self.cidr.subnets(new_prefix=self.block_size)


@dataclass(frozen=True, slots=True)
class Block:
    """One block of a pool: its node affinity and its allocations (address → handle).

    ``attributes`` keeps per-handle facts (pod namespace and name, node) that let a DEL
    without pod arguments, and garbage collection, find what a handle belongs to.
    """

    cidr: IPNetwork
    pool: str
    affinity: str | None
    allocations: Mapping[IPAddress, str] = field(default_factory=dict)
    attributes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return block_name(self.cidr)

    def free(self) -> Iterator[IPAddress]:
        """Free addresses, lowest first. Every address of a block is usable: pods get /32
        (/128) routes, so there is no network or broadcast address to keep back."""
        return (ip for ip in self.cidr if ip not in self.allocations)

    def handles(self) -> set[str]:
        return set(self.allocations.values())

    def to_document(self) -> dict[str, Any]:
        return {
            "apiVersion": BLOCK_API_VERSION,
            "kind": BLOCK_KIND,
            "metadata": {"name": self.name},
            "spec": {
                "cidr": str(self.cidr),
                "pool": self.pool,
                "affinity": self.affinity,
                "allocations": {str(ip): handle for ip, handle in sorted(self.allocations.items())},
                "attributes": {h: dict(a) for h, a in sorted(self.attributes.items())},
            },
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Block:
        spec = document.get("spec") or {}
        try:
            cidr = ipaddress.ip_network(str(spec["cidr"]))
            allocations = {
                ipaddress.ip_address(ip): str(handle)
                for ip, handle in (spec.get("allocations") or {}).items()
            }
        except (KeyError, ValueError) as exc:
            name = (document.get("metadata") or {}).get("name")
            raise IpamError(f"{BLOCK_KIND} {name}: unreadable: {exc}") from None
        attributes = {
            str(h): {str(k): str(v) for k, v in a.items()}
            for h, a in (spec.get("attributes") or {}).items()
        }
        affinity = spec.get("affinity")
        return cls(cidr, str(spec.get("pool") or ""), affinity, allocations, attributes)


def block_name(cidr: IPNetwork) -> str:
    """The document name of a block: its CIDR with ``.``, ``:`` and ``/`` as ``-``."""
    return str(cidr).replace(".", "-").replace(":", "-").replace("/", "-")


def node_affinity(node: str) -> str:
    return f"host:{node}"


@dataclass(frozen=True, slots=True)
class Assignment:
    """An address given to a handle, and the block it came from."""

    ip: IPAddress
    handle: str
    block: IPNetwork
    pool: str

    @property
    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """The address as the pod carries it: a host route's length (/32 or /128)."""
        return ipaddress.ip_interface(f"{self.ip}/{self.ip.max_prefixlen}")


@dataclass(frozen=True, slots=True)
class Plan:
    """What to write: the blocks to put, and what the caller gets."""

    writes: tuple[Block, ...]
    assignments: tuple[Assignment, ...]


def eligible_pools(
    pools: Iterable[Pool], node_labels: Mapping[str, str], version: int
) -> list[Pool]:
    """Pools a workload on this node may take an address from, by name.

    Skipped: disabled pools, pools of the other family, pools not allowed for workloads,
    pools in manual assignment mode and pools whose nodeSelector does not match the node.
    """
    return sorted(
        (
            pool
            for pool in pools
            if not pool.disabled
            and not pool.manual
            and pool.cidr.version == version
            and "Workload" in pool.allowed_uses
            and pool.selects(node_labels)
        ),
        key=lambda pool: pool.name,
    )


def find_handle(blocks: Iterable[Block], handle: str) -> list[Assignment]:
    """Every address held by ``handle``."""
    return [
        Assignment(ip, handle, block.cidr, block.pool)
        for block in blocks
        for ip, owner in sorted(block.allocations.items())
        if owner == handle
    ]


def plan_assign(
    blocks: Iterable[Block],
    pools: Iterable[Pool],
    node: str,
    node_labels: Mapping[str, str],
    handle: str,
    attributes: Mapping[str, str],
    version: int = 4,
) -> Plan:
    """Give ``handle`` one address of family ``version`` for a workload on ``node``.

    Order: the lowest free address of a block this node already has affinity to; otherwise
    the first unclaimed block of the first eligible pool (by name), claimed for this node.
    Blocks of other nodes are not borrowed. Raises :class:`PoolExhausted` when neither
    exists, and :class:`HandleInUse` if ``handle`` already holds an address of this family.
    """
    existing = list(blocks)
    if any(a.ip.version == version for a in find_handle(existing, handle)):
        raise HandleInUse(f"handle {handle} already holds an IPv{version} address")
    candidates = eligible_pools(pools, node_labels, version)
    if not candidates:
        raise PoolExhausted(f"no enabled IPv{version} IP pool for workloads selects node {node}")
    affinity = node_affinity(node)
    by_pool = {pool.name: pool for pool in candidates}
    own = sorted(
        (b for b in existing if b.affinity == affinity and b.pool in by_pool),
        key=lambda b: (b.pool, b.cidr),
    )
    for block in own:
        ip = next(block.free(), None)
        if ip is not None:
            return _take(block, ip, handle, attributes)
    claimed = {b.cidr for b in existing}
    for pool in candidates:
        for cidr in pool.blocks():
            if cidr not in claimed:
                fresh = Block(cidr, pool.name, affinity)
                return _take(fresh, next(fresh.free()), handle, attributes)
    names = ", ".join(pool.name for pool in candidates)
    raise PoolExhausted(
        f"IP pools {names} have no free IPv{version} address for node {node}: "
        f"its {len(own)} block(s) are full and every other block is claimed"
    )


def _take(block: Block, ip: IPAddress, handle: str, attributes: Mapping[str, str]) -> Plan:
    updated = Block(
        block.cidr,
        block.pool,
        block.affinity,
        {**block.allocations, ip: handle},
        {**block.attributes, handle: dict(attributes)},
    )
    return Plan((updated,), (Assignment(ip, handle, block.cidr, block.pool),))


def plan_release(blocks: Iterable[Block], handle: str) -> Plan:
    """Free every address ``handle`` holds. Nothing to write if it holds none (idempotent).

    Emptied blocks keep their node affinity, as Calico's do: the node will use them again.
    """
    writes: list[Block] = []
    released: list[Assignment] = []
    for block in blocks:
        mine = {ip for ip, owner in block.allocations.items() if owner == handle}
        if not mine and handle not in block.attributes:
            continue
        released += [Assignment(ip, handle, block.cidr, block.pool) for ip in sorted(mine)]
        writes.append(
            Block(
                block.cidr,
                block.pool,
                block.affinity,
                {ip: owner for ip, owner in block.allocations.items() if ip not in mine},
                {h: a for h, a in block.attributes.items() if h != handle},
            )
        )
    return Plan(tuple(writes), tuple(released))
