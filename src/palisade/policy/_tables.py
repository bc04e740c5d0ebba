"""Verdict tables over every port at once: the batch and all-ports connectivity path.

For one local endpoint and direction, the tier algorithm runs over a bit set indexed by
(port signature, peer): a signature is a (protocol, representative port) standing for every
port that no rule can tell apart from it. The bit set is a Python integer, so one rule step
is a handful of big-integer operations over all signatures and all peers together — far
fewer interpreter steps than a loop per port, and no per-call overhead of small arrays.

Bit ``s * P + p`` is signature ``s`` and peer ``p`` (``P`` peers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ._evaluate import PolicyEngine
from ._matrix import BoolArray, _Peers
from ._types import (
    Action,
    CompiledRule,
    Direction,
    Endpoint,
    EntityMatch,
    PortMatch,
)


class SignatureEvaluator:
    """Enforced verdict bit sets (signatures × peers) for local endpoints, one direction each."""

    def __init__(
        self,
        engine: PolicyEngine,
        peers: _Peers,
        protocols: Sequence[int],
        ports: Sequence[int],
    ) -> None:
        self.engine = engine
        self.peers = peers
        self.protocols = np.array(protocols, dtype=np.int64)
        self.ports = np.array(ports, dtype=np.int64)
        self.signatures = len(protocols)
        self.width = self.signatures * peers.size
        self.full = (1 << self.width) - 1
        self._peer_bits: dict[tuple[int, Direction], int] = {}
        self._local_columns: dict[tuple[EntityMatch, bool, bool], npt.NDArray[np.bool_]] = {}
        self._local_bits: dict[bytes, int] = {}
        # Equal entities recur across rules and policies (the same DNS, monitoring or
        # namespace peer); their matrices are computed once per evaluator.
        self._entity_cache: dict[tuple[EntityMatch, bool, bool], npt.NDArray[np.bool_]] = {}
        self._index = {id(e): i for i, e in enumerate(peers.endpoints) if e is not None}

    # -- building blocks ------------------------------------------------------------------

    def _to_bits(self, matrix: npt.NDArray[np.bool_]) -> int:
        """A (signatures × peers) boolean matrix as a bit set."""
        packed = np.packbits(np.ascontiguousarray(matrix).reshape(-1), bitorder="little")
        return int.from_bytes(packed.tobytes(), "little")

    def _protocol_ok(self, rule: CompiledRule) -> npt.NDArray[np.bool_]:
        ok = np.ones(self.signatures, dtype=bool)
        if rule.protocol is not None:
            ok &= self.protocols == rule.protocol
        if rule.not_protocol is not None:
            ok &= self.protocols != rule.not_protocol
        if rule.icmp is not None or rule.ip_version == 6:
            # Signatures are IPv4 TCP/UDP/SCTP ports: ICMP types and IPv6 rules never match.
            ok[:] = False
        return ok

    def _port_matrix(self, match: PortMatch, selector: object) -> npt.NDArray[np.bool_]:
        """[signature, peer]: the signature's port is in ``match`` for that peer."""
        matrix = np.zeros((self.signatures, self.peers.size), dtype=bool)
        for port_range in match.ranges:
            in_range = (self.ports >= port_range.low) & (self.ports <= port_range.high)
            matrix |= in_range[:, None]
        for name in match.names:
            for protocol in np.unique(self.protocols):
                rows = self.protocols == protocol
                declared = self.peers.declared_ports(name, int(protocol))
                hit = (declared[None, :] >= 0) & (declared[None, :] == self.ports[rows][:, None])
                if selector is not None:
                    hit &= self.peers.label_mask(selector)[None, :]  # type: ignore[arg-type]
                matrix[rows] |= hit
        return matrix

    def entity_matrix(
        self, entity: EntityMatch, *, port_known: bool, is_destination: bool
    ) -> npt.NDArray[np.bool_]:
        """[signature, peer]: the entity matches the peer's address (and, where the port is the
        signature's, its port). Without a known port (ephemeral source ports), `ports` never
        match and `notPorts` never exclude. Shared between equal entities: do not modify."""
        key = (entity, port_known, is_destination)
        matrix = self._entity_cache.get(key)
        if matrix is None:
            matrix = self._entity_matrix(
                entity, port_known=port_known, is_destination=is_destination
            )
            matrix.flags.writeable = False
            self._entity_cache[key] = matrix
        return matrix

    def _entity_matrix(
        self, entity: EntityMatch, *, port_known: bool, is_destination: bool
    ) -> npt.NDArray[np.bool_]:
        peers = self.peers
        base = peers.address_mask(entity)
        matrix = np.broadcast_to(base, (self.signatures, peers.size)).copy()
        if entity.ports:
            if not port_known:
                return np.zeros_like(matrix)
            matrix &= self._port_matrix(entity.ports, entity.selector)
        if entity.not_ports and port_known:
            matrix &= ~self._port_matrix(entity.not_ports, entity.selector)
        if entity.service is not None:
            only_service = EntityMatch(service=entity.service)
            for s in range(self.signatures):
                for p in np.nonzero(matrix[s])[0]:
                    matrix[s, p] = self.engine.entity_matches(
                        only_service,
                        peers.ips[p],
                        int(self.ports[s]) if port_known else None,
                        int(self.protocols[s]),
                        is_destination=is_destination,
                    )
        return matrix

    def _peer(self, rule: CompiledRule, direction: Direction) -> int:
        key = (id(rule), direction)
        bits = self._peer_bits.get(key)
        if bits is None:
            if direction is Direction.EGRESS:
                matrix = self.entity_matrix(rule.destination, port_known=True, is_destination=True)
            else:
                matrix = self.entity_matrix(rule.source, port_known=False, is_destination=False)
            bits = self._to_bits(matrix & self._protocol_ok(rule)[:, None])
            self._peer_bits[key] = bits
        return bits

    def _local(self, rule: CompiledRule, direction: Direction, index: int) -> int:
        """The signatures (as whole peer blocks) for which the rule's local side matches."""
        if direction is Direction.EGRESS:
            key = (rule.source, False, False)
        else:
            key = (rule.destination, True, True)
        columns = self._local_columns.get(key)
        if columns is None:
            # [signature, local]: the same entity machinery, with the locals as the universe.
            entity, port_known, is_destination = key
            columns = self.entity_matrix(
                entity, port_known=port_known, is_destination=is_destination
            )
            columns = np.ascontiguousarray(columns.T)
            self._local_columns[key] = columns
        column = columns[index]
        pattern = column.tobytes()
        bits = self._local_bits.get(pattern)
        if bits is None:
            block = np.repeat(column, self.peers.size)
            bits = self._to_bits(block)
            self._local_bits[pattern] = bits
        return bits

    # -- the tier algorithm ---------------------------------------------------------------

    def evaluate(self, endpoint: Endpoint, direction: Direction) -> int:
        """Spec 4.6 and 4.7 over all (signature, peer) pairs for one local endpoint."""
        index = self._index[id(endpoint)]
        allowed = 0
        undecided = self.full
        for tier_policies in self.engine.applying(endpoint, direction, pending=False):
            in_tier = undecided
            for policy in tier_policies.policies:
                if policy.staged:
                    continue
                for rule in policy.rules(direction):
                    if rule.action is Action.LOG:
                        continue
                    hit = in_tier & self._peer(rule, direction)
                    if not hit:
                        continue
                    hit &= self._local(rule, direction, index)
                    if not hit:
                        continue
                    in_tier ^= hit
                    if rule.action is Action.ALLOW:
                        allowed |= hit
                        undecided ^= hit
                    elif rule.action is Action.DENY:
                        undecided ^= hit
                    # Pass: leaves the tier, still undecided.
                if not in_tier:
                    break
            if tier_policies.has_enforced and tier_policies.tier.default_action is not Action.PASS:
                undecided ^= in_tier  # end-of-tier deny (in_tier is a subset of undecided)
            if not undecided:
                return allowed
        for name in endpoint.profiles:
            profile = self.engine.cluster.profiles.get(name)
            if profile is None:
                continue
            for rule in profile.rules(direction):
                if rule.action is Action.LOG:
                    continue
                hit = undecided & self._peer(rule, direction)
                if not hit:
                    continue
                hit &= self._local(rule, direction, index)
                if rule.action is Action.ALLOW:
                    allowed |= hit
                undecided &= ~hit  # Deny, and Pass (which denies in a profile)
        return allowed

    def packed_rows(self, direction: Direction) -> npt.NDArray[np.uint8]:
        """[local, packed (signature, peer) bits] for every peer acting as the local endpoint;
        addresses that are not endpoints have no pipeline of their own (all bits set)."""
        nbytes = (self.width + 7) // 8
        everything = self.full.to_bytes(nbytes, "little")
        rows = [
            everything
            if endpoint is None
            else self.evaluate(endpoint, direction).to_bytes(nbytes, "little")
            for endpoint in self.peers.endpoints
        ]
        return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), nbytes)

    def lookup(
        self,
        signature: npt.NDArray[np.int64],
        source: npt.NDArray[np.int64],
        destination: npt.NDArray[np.int64],
    ) -> BoolArray:
        """Verdicts for flows given as (signature, source peer, destination peer) indices:
        the source's egress and the destination's ingress must both allow."""
        size = self.peers.size
        egress = self.packed_rows(Direction.EGRESS)
        ingress = self.packed_rows(Direction.INGRESS)
        # Every index fits in 32 bits (checked), which halves the memory traffic of the gathers.
        if egress.size >= 2**31:
            raise ValueError("verdict tables too large for one batch")
        signature_base = signature.astype(np.int32) * np.int32(size)
        source32 = source.astype(np.int32)
        destination32 = destination.astype(np.int32)
        result = _bit_at(egress, source32, signature_base + destination32)
        result &= _bit_at(ingress, destination32, signature_base + source32)
        return result


def _bit_at(
    packed: npt.NDArray[np.uint8], row: npt.NDArray[np.int32], bit: npt.NDArray[np.int32]
) -> BoolArray:
    index = row * np.int32(packed.shape[1])
    index += bit >> 3
    byte = packed.reshape(-1)[index]
    byte >>= (bit & 7).astype(np.uint8)
    result: BoolArray = (byte & 1).view(bool)
    return result
