"""nftables driver benchmark: libnftables in process versus an ``nft`` process per transaction.

    sudo .venv/bin/python bench/nft_bench.py                      # 1,000 pods, 500 policies
    sudo .venv/bin/python bench/nft_bench.py --pods 200 --policies 100 --changes 50 --repeats 1

Needs root: every run programs ``inet palisade`` in network namespaces of its own
(``pal-b<hex>…``), which it deletes at the end, also after a failure. The intents come from
``generate_cluster(namespaces=10, pods=N, policies=P, tiers=2)`` with every pod on one node,
computed once by the calc graph; the figures are for the driver alone, for each path:

(a) full load: ``NftablesDataplane.apply()`` into an empty namespace (adoption finds no table,
    then render, delta and one transaction) — median of ``--repeats`` fresh namespaces, with
    the median render time (a fresh renderer) shown apart;
(b) one policy change: a policy gains or loses a rule, then ``apply()`` — p50 and p99 over
    ``--changes`` changes against the fully loaded table, rotating over the policies;
(c) one IP-set change (what a pod coming or going does to the sets that select it): a set
    gains a member or loses it again, then ``apply()`` — p50 and p99 likewise.

No figure here is asserted anywhere; the tests check behaviour, not time.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from palisade.calc import (
    KUBERNETES_NETWORK_POLICY_KIND,
    EntityIntent,
    IPSetIntent,
    PolicyIntent,
    PortsIntent,
    RuleIntent,
    build_graph,
)
from palisade.dataplane.linux import create_netns, delete_netns
from palisade.dataplane.linux._libnft import available as libnftables_available
from palisade.dataplane.linux._nftables import NftablesDataplane
from palisade.datastore import ResourceKey
from palisade.policy import Action
from palisade.policy.synthetic import generate_cluster

NODE = "bench-node"
EXTRA_RULE = RuleIntent(
    9999,
    Action.DENY,
    protocol=6,
    destination=EntityIntent(ports=PortsIntent(ranges=((9999, 9999),))),
)


@dataclass(frozen=True, slots=True)
class Figures:
    backend: str
    load_s: float
    render_s: float
    commands: int
    change_p50_ms: float
    change_p99_ms: float
    set_p50_ms: float
    set_p99_ms: float


def _key(document: dict[str, Any]) -> ResourceKey:
    kind = str(document["kind"])
    if kind == "NetworkPolicy" and str(document["apiVersion"]).startswith("networking.k8s.io"):
        kind = KUBERNETES_NETWORK_POLICY_KIND
    meta = document["metadata"]
    return ResourceKey(kind, meta.get("namespace"), str(meta["name"]))


def intents(pods: int, policies: int) -> NftablesDataplane:
    """A driver that only holds the node's intents (it never talks to the kernel)."""
    documents = generate_cluster(namespaces=10, pods=pods, policies=policies, tiers=2, seed=1)
    for document in documents:
        if document["kind"] == "Pod":
            document["spec"]["nodeName"] = NODE
    holder = NftablesDataplane(libnftables=False)
    graph = build_graph(NODE, holder)
    for document in documents:
        graph.on_update(_key(document), document)
    graph.flush()
    return holder


def _driver(source: NftablesDataplane, netns: str, libnftables: bool) -> NftablesDataplane:
    driver = NftablesDataplane(netns, libnftables=libnftables)
    driver.sets.update(source.sets)
    driver.policies.update(source.policies)
    driver.profiles.update(source.profiles)
    driver.endpoints.update(source.endpoints)
    return driver


@contextmanager
def namespace(prefix: str, suffix: str) -> Iterator[str]:
    name = f"{prefix}{suffix}"
    create_netns(name)
    try:
        yield name
    finally:
        delete_netns(name)
        _settle()


def _busy_share(seconds: float) -> float:
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            ticks = [int(field) for field in stat.readline().split()[1:]]
        return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # not idle, not iowait

    busy, total = sample()
    time.sleep(seconds)
    busy_after, total_after = sample()
    return (busy_after - busy) / max(1, total_after - total)


def _settle(limit: float = 30.0) -> None:
    """Wait (up to ``limit`` s) until the machine is idle: the kernel tears down a namespace
    with a large table in the background, for seconds, which would slow the next figure."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and _busy_share(0.5) > 0.1:
        pass


def _changed(policy: PolicyIntent) -> PolicyIntent:
    return replace(policy, ingress=(*policy.ingress, EXTRA_RULE))


def _percentiles_ms(latencies: list[float]) -> tuple[float, float]:
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return quantiles[49] * 1000, quantiles[98] * 1000


def measure(
    source: NftablesDataplane, libnftables: bool, prefix: str, repeats: int, changes: int
) -> Figures:
    tag = "l" if libnftables else "n"
    loads: list[float] = []
    renders: list[float] = []
    commands = 0
    for index in range(repeats):
        with namespace(prefix, f"{tag}{index}") as netns:
            renderer_only = _driver(source, netns, libnftables)
            started = time.perf_counter()
            renderer_only.desired()
            renders.append(time.perf_counter() - started)
            with _driver(source, netns, libnftables) as driver:
                started = time.perf_counter()
                commands = driver.apply()
                loads.append(time.perf_counter() - started)
    latencies: list[float] = []
    with (
        namespace(prefix, f"{tag}c") as netns,
        _driver(source, netns, libnftables) as driver,
    ):
        driver.apply()
        policy_ids = sorted(driver.policies)
        originals = dict(driver.policies)
        for index in range(changes):
            policy_id = policy_ids[index % len(policy_ids)]
            changed = driver.policies[policy_id] is originals[policy_id]
            driver.on_policy_update(
                policy_id, _changed(originals[policy_id]) if changed else originals[policy_id]
            )
            started = time.perf_counter()
            assert driver.apply() > 0
            latencies.append(time.perf_counter() - started)
        driver.on_policy_update(policy_ids[0], originals[policy_ids[0]])
        set_latencies: list[float] = []
        set_ids = sorted(k for k, v in driver.sets.items() if isinstance(v, IPSetIntent))
        for index in range(changes):
            set_id = set_ids[index % len(set_ids)]
            current = driver.sets[set_id]
            assert isinstance(current, IPSetIntent)
            member = f"10.254.{index % 250}.1/32"
            members = current.members ^ {member}  # one member more, or one fewer
            driver.on_ipset_update(set_id, IPSetIntent(set_id, members))
            started = time.perf_counter()
            assert driver.apply() > 0
            set_latencies.append(time.perf_counter() - started)
        backend = driver.backend
    return Figures(
        backend,
        statistics.median(loads),
        statistics.median(renders),
        commands,
        *_percentiles_ms(latencies),
        *_percentiles_ms(set_latencies),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--policies", type=int, default=500)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the namespaces made so far are deleted on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if not libnftables_available():
        print("libnftables.so.1 cannot be loaded: nothing to compare", file=sys.stderr)
        return 1
    source = intents(args.pods, args.policies)
    print(
        f"node: {len(source.endpoints)} endpoints, {len(source.policies)} policies, "
        f"{len(source.profiles)} profiles, {len(source.sets)} IP sets"
    )
    prefix = f"pal-b{secrets.token_hex(3)}"
    results = [
        measure(source, libnftables, prefix, args.repeats, args.changes)
        for libnftables in (False, True)
    ]
    print(
        f"{'path':<12} {'full load s':>12} {'(render s)':>11} {'commands':>9} "
        f"{'policy p50/p99 ms':>18} {'IP set p50/p99 ms':>18}"
    )
    for figures in results:
        policy = f"{figures.change_p50_ms:.1f} / {figures.change_p99_ms:.1f}"
        ipset = f"{figures.set_p50_ms:.1f} / {figures.set_p99_ms:.1f}"
        print(
            f"{figures.backend:<12} {figures.load_s:>12.2f} {figures.render_s:>11.2f} "
            f"{figures.commands:>9} {policy:>18} {ipset:>18}"
        )
    spawn, library = results
    print(
        f"nft / libnftables: full load {spawn.load_s / library.load_s:.2f}x, "
        f"policy change p50 {spawn.change_p50_ms / library.change_p50_ms:.2f}x, "
        f"p99 {spawn.change_p99_ms / library.change_p99_ms:.2f}x, "
        f"IP set change p50 {spawn.set_p50_ms / library.set_p50_ms:.2f}x, "
        f"p99 {spawn.set_p99_ms / library.set_p99_ms:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
