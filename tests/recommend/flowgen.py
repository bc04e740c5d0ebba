"""Flow records from a synthetic cluster: the engine decides, allowed flows are recorded."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from palisade.flows import FlowRecord, proto_name
from palisade.policy import Cluster, Endpoint, Flow, PolicyEngine

TOPOLOGY_KINDS = frozenset(
    {"Namespace", "ServiceAccount", "Pod", "Service", "NetworkSet", "GlobalNetworkSet", "Tier"}
)
EXTERNAL = ("8.8.8.8", "1.1.1.1", "93.184.216.34")


def topology(documents: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(d) for d in documents if d.get("kind") in TOPOLOGY_KINDS]


@dataclass(frozen=True)
class Recorded:
    flow: Flow
    source: Endpoint
    destination: Endpoint | None


def _side(endpoint: Endpoint | None, ip: str, aggregated: bool) -> dict[str, Any]:
    prefix: dict[str, Any]
    if endpoint is None:
        address = ipaddress.ip_address(ip)
        return {
            "ip": None if aggregated else ip,
            "name": "-",
            "name_aggr": "pvt" if address.is_private else "pub",
            "namespace": "-",
            "type": "net",
            "labels": (),
        }
    prefix = {
        "ip": None if aggregated else ip,
        "name": "-" if aggregated else endpoint.name,
        "name_aggr": f"{endpoint.generate_name}*" if endpoint.generate_name else endpoint.name,
        "namespace": endpoint.namespace or "-",
        "type": endpoint.kind,
        "labels": tuple(
            f"{k}={v}" for k, v in endpoint.labels if "/" not in k or k.startswith("app.")
        ),
    }
    return prefix


def records_for(
    engine: PolicyEngine, flow: Flow, *, aggregated: bool, start: int = 1_700_000_000
) -> list[FlowRecord]:
    """The records Calico would write for one connection: one per reporting Calico side."""
    verdict = engine.evaluate(flow)
    source = engine.endpoint_for_ip(flow.src_ip)
    destination = engine.endpoint_for_ip(flow.dst_ip)
    src = _side(source, str(flow.src_ip), aggregated)
    dst = _side(destination, str(flow.dst_ip), aggregated)
    common = {
        "start_time": start,
        "end_time": start + 300,
        "proto": proto_name(flow.protocol),
        "source_ip": src["ip"],
        "source_name": src["name"],
        "source_name_aggr": src["name_aggr"],
        "source_namespace": src["namespace"],
        "source_type": src["type"],
        "source_labels": src["labels"],
        "dest_ip": dst["ip"],
        "dest_port": flow.dst_port,
        "dest_name": dst["name"],
        "dest_name_aggr": dst["name_aggr"],
        "dest_namespace": dst["namespace"],
        "dest_type": dst["type"],
        "dest_labels": dst["labels"],
        "num_flows": 1,
    }
    records = []
    if verdict.egress is not None:
        action = "allow" if verdict.egress.allowed else "deny"
        records.append(FlowRecord(action=action, reporter="src", **common))
    if verdict.ingress is not None and (verdict.egress is None or verdict.egress.allowed):
        action = "allow" if verdict.ingress.allowed else "deny"
        records.append(FlowRecord(action=action, reporter="dst", **common))
    return records


def sample_flows(cluster: Cluster, count: int, seed: int) -> list[Flow]:
    """Pod-to-pod flows mostly to declared ports, some DNS, some to external addresses."""
    rng = random.Random(seed)
    pods = sorted(cluster.pods, key=lambda e: e.key)
    dns = [p for p in pods if p.namespace == "kube-system"]
    flows: list[Flow] = []
    for _ in range(count):
        src = rng.choice(pods)
        roll = rng.random()
        if roll < 0.1 and dns:
            flows.append(Flow(src.ips[0], rng.choice(dns).ips[0], 17, dst_port=53))
            continue
        if roll < 0.15:
            target = ipaddress.ip_address(rng.choice(EXTERNAL))
            flows.append(Flow(src.ips[0], target, 6, dst_port=443))
            continue
        dst = rng.choice(pods)
        if dst.named_ports and rng.random() < 0.9:
            named = rng.choice(dst.named_ports)
            flows.append(Flow(src.ips[0], dst.ips[0], named.protocol, dst_port=named.port))
        else:
            flows.append(Flow(src.ips[0], dst.ips[0], 6, dst_port=rng.randrange(1, 65536)))
    return flows
