"""What-if benchmark: replay of flow records through a staged or proposed policy set.

    .venv/bin/python bench/whatif_bench.py            # 10,000,000 flows (about a minute)
    .venv/bin/python bench/whatif_bench.py --quick    # 200,000 flows on a small cluster

Input: ``generate_cluster(namespaces=100, pods=2000, policies=500, tiers=3)`` and
``flows_from_cluster`` flows turned into flow-record columns as the flow store holds them at
Calico's default aggregation for allowed flows (level 2): pods named by ``namespace`` and
``name_aggr`` (no addresses), external peers with their address (as level 1 keeps them).

(c) what-if replay of 10,000,000 flows, from columns to the report, everything included:
    both clusters compiled, deduplication, references mapped back to endpoints, two batch
    verdicts, the deciding policy traced for changed flows, grouping. Target < 10 s.
    Modes: ``staged`` (the cluster's staged policies enforced: the pending view) and
    ``proposed`` (the staged policies rewritten as their enforced kinds and applied over
    the cluster, replacing same keys).
Figures are medians of 3 runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from palisade.policy import Cluster
from palisade.policy.synthetic import flows_from_cluster, generate_cluster
from palisade.whatif import EndpointRef, FlowColumns, WhatIfReport, replay

T = TypeVar("T")
_STAGED_TO_ENFORCED = {
    "StagedNetworkPolicy": ("projectcalico.org/v3", "NetworkPolicy"),
    "StagedGlobalNetworkPolicy": ("projectcalico.org/v3", "GlobalNetworkPolicy"),
    "StagedKubernetesNetworkPolicy": ("networking.k8s.io/v1", "NetworkPolicy"),
}


def timed(function: Callable[[], T], repeats: int) -> tuple[float, T]:
    times: list[float] = []
    result: T | None = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    assert result is not None
    return statistics.median(times), result


def columns_from_cluster(documents: list[dict[str, Any]], n: int, seed: int) -> FlowColumns:
    """``n`` flows as level-2 record columns (see the module docstring)."""
    batch = flows_from_cluster(documents, n, seed)
    cluster = Cluster.from_documents([d for d in documents if d.get("kind") == "Pod"])
    pods = sorted(cluster.pods, key=lambda e: int(e.ips[0]))
    pod_ips = np.array([int(p.ips[0]) for p in pods], dtype=np.uint32)
    refs: list[EndpointRef] = []
    aggregate_index: dict[tuple[str, str], int] = {}
    ref_of_pod = np.empty(len(pods), dtype=np.int32)
    for i, pod in enumerate(pods):
        name_aggr = f"{pod.generate_name}*" if pod.generate_name else pod.name
        key = (pod.namespace or "default", name_aggr)
        if key not in aggregate_index:
            aggregate_index[key] = len(refs)
            refs.append(EndpointRef("wep", key[0], "-", name_aggr, None))
        ref_of_pod[i] = aggregate_index[key]

    def to_refs(addresses: np.ndarray[Any, np.dtype[np.uint32]]) -> np.ndarray[Any, Any]:
        position = np.minimum(np.searchsorted(pod_ips, addresses), len(pod_ips) - 1)
        is_pod = pod_ips[position] == addresses
        result = np.where(is_pod, ref_of_pod[position], -1).astype(np.int32)
        outside, inverse = np.unique(addresses[~is_pod], return_inverse=True)
        base = len(refs)
        for value in outside.tolist():
            ip = ".".join(str((int(value) >> s) & 255) for s in (24, 16, 8, 0))
            refs.append(EndpointRef("net", "-", "-", "pub", ip))
        result[~is_pod] = base + inverse.astype(np.int32)
        return result

    src = to_refs(batch.src_ip)
    dst = to_refs(batch.dst_ip)
    return FlowColumns(
        endpoints=refs,
        src=src,
        dst=dst,
        protocol=batch.protocol,
        port=batch.dst_port.astype(np.int32),
        allowed=np.ones(len(batch), dtype=bool),
        start_time=1_700_000_000,
        end_time=1_700_003_600,
    )


def enforced_versions(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    proposed = []
    for document in documents:
        target = _STAGED_TO_ENFORCED.get(str(document.get("kind")))
        if target is None:
            continue
        spec = dict(document.get("spec") or {})
        if spec.pop("stagedAction", "Set") != "Set":
            continue
        proposed.append({**document, "apiVersion": target[0], "kind": target[1], "spec": spec})
    return proposed


def describe(report: WhatIfReport) -> str:
    return (
        f"{report.flows:,} distinct flows, {report.allow_to_deny_records:,} records "
        f"allow→deny, {report.deny_to_allow_records:,} deny→allow, "
        f"{report.unknown_records:,} unknown, {len(report.by_policy)} deciding policies, "
        f"{report.untraced_flows:,} untraced"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--flows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        scale = {"namespaces": 10, "pods": 200, "policies": 50, "tiers": 2}
        n = args.flows or 200_000
    else:
        scale = {"namespaces": 100, "pods": 2000, "policies": 500, "tiers": 3}
        n = args.flows or 10_000_000
    documents = generate_cluster(seed=1, **scale)
    start = time.perf_counter()
    columns = columns_from_cluster(documents, n, seed=2)
    print(
        f"flow columns ({n:,} records, {len(columns.endpoints):,} endpoint references)"
        f"  {time.perf_counter() - start:.2f} s  (input, not timed below)"
    )
    proposed = enforced_versions(documents)
    for mode in ("staged", "proposed"):
        if mode == "staged":
            seconds, report = timed(lambda: replay(columns, documents, staged=True), args.repeats)
        else:
            seconds, report = timed(lambda: replay(columns, documents, proposed), args.repeats)
        rate = n / seconds
        print(
            f"(c) what-if replay, {mode} ({n:,} flows)  {seconds:.2f} s  {rate:,.0f} flows/s"
            f"  target < 10 s  [{describe(report)}]"
        )


if __name__ == "__main__":
    main()
