"""The collector's pure core: rule hits and conntrack counters become Calico flow records."""

from __future__ import annotations

from dataclasses import dataclass

from palisade.flows._collect import (
    ConntrackEntry,
    Direction,
    EndpointInfo,
    FiveTuple,
    FlowCollector,
    Hit,
    HitTable,
    network_info,
)

WEB = EndpointInfo("web-0", "web-*", "shop", "wep", ("app=web",))
DB = EndpointInfo("db-0", "db-*", "data", "wep", ("app=db",))
ENDPOINTS = {"10.244.0.2": WEB, "10.244.0.70": DB}
PASS = Hit("security", "gnp:restricted", "pass", 0)
ALLOW = Hit("default", "knp:data/stores", "allow", 0)
DENY = Hit("default", "knp:data/default-deny", "deny", -1)
EGRESS_ALLOW = Hit("default", "knp:shop/web", "allow", 1)
TCP = (6, "10.244.0.2", 40000, "10.244.0.70", 5432)


def lookup(ip: str) -> EndpointInfo:
    return ENDPOINTS.get(ip) or network_info(ip)


def collector() -> tuple[FlowCollector, HitTable]:
    table = HitTable()
    return FlowCollector("node-1", table, lookup), table


def test_an_allowed_connection_is_reported_by_both_ends_with_its_trace_and_counters() -> None:
    flows, table = collector()
    flows.on_logged(table.prefix("egress", EGRESS_ALLOW), TCP, 60, now=1.0)
    flows.on_logged(table.prefix("ingress", PASS), TCP, 60, now=1.0)
    flows.on_logged(table.prefix("ingress", ALLOW), TCP, 60, now=1.0)
    entry = ConntrackEntry(*TCP, packets_out=10, bytes_out=1000, packets_in=8, bytes_in=5000)
    flows.on_conntrack([entry])
    first = {r.reporter: r for r in flows.flush(0, 15, live={TCP})}
    assert set(first) == {"src", "dst"}
    src, dst = first["src"], first["dst"]
    assert src.action == dst.action == "allow"
    assert src.enforced_policies == ("0|default|knp:shop/web|allow|1",)
    assert dst.enforced_policies == (
        "0|security|gnp:restricted|pass|0",
        "1|default|knp:data/stores|allow|0",
    )
    assert (src.bytes_out, src.bytes_in, src.packets_out, src.packets_in) == (1000, 5000, 10, 8)
    assert (dst.bytes_in, dst.bytes_out) == (1000, 5000)  # the destination's point of view
    assert (src.source_name, src.dest_namespace, src.dest_labels) == ("web-0", "data", ("app=db",))
    assert (src.num_flows, src.num_flows_started, src.num_flows_completed) == (1, 1, 0)
    assert (src.proto, src.source_port, src.dest_port, src.host) == ("tcp", 40000, 5432, "node-1")
    # with nothing staged the pending trace is the enforced one; no Service is known
    assert (src.pending_policies, dst.pending_policies) == (
        src.enforced_policies,
        dst.enforced_policies,
    )
    assert (dst.dest_service_name, dst.dest_service_port, dst.dest_service_port_num) == (
        "-",
        "-",
        None,
    )

    assert flows.flush(15, 20, live={TCP}) == []  # idle for an interval: nothing to report
    # the next interval carries only the growth; the end of the connection completes it
    flows.on_destroyed(
        ConntrackEntry(*TCP, packets_out=12, bytes_out=1300, packets_in=9, bytes_in=5600)
    )
    second = {r.reporter: r for r in flows.flush(15, 30)}
    assert (second["src"].bytes_out, second["src"].bytes_in) == (300, 600)
    assert (second["src"].num_flows_started, second["src"].num_flows_completed) == (0, 1)
    assert flows.flush(30, 45) == []  # forgotten once ended


def test_denied_attempts_are_counted_from_the_log_with_their_denying_rule() -> None:
    flows, table = collector()
    udp = (17, "10.244.0.2", 5353, "10.244.0.70", 53)
    for second in range(3):  # three attempts of one 5-tuple: one record, three packets
        flows.on_logged(table.prefix("ingress", PASS), udp, 40, now=float(second))
        flows.on_logged(table.prefix("ingress", DENY), udp, 40, now=float(second))
    (record,) = flows.flush(0, 15)
    assert (record.action, record.reporter, record.proto) == ("deny", "dst", "udp")
    assert record.enforced_policies == (
        "0|security|gnp:restricted|pass|0",
        "1|default|knp:data/default-deny|deny|-1",
    )
    assert (record.packets_in, record.bytes_in, record.packets_out) == (3, 120, 0)
    assert record.num_flows_completed == 1
    assert flows.flush(15, 30) == []


def test_unknown_prefixes_and_vanished_connections() -> None:
    flows, table = collector()
    flows.on_logged("palx000000000000", TCP, 60, now=0.0)
    flows.on_logged("other", TCP, 60, now=0.0)
    assert flows.unknown_prefixes == 2 and flows.flush(0, 15) == []
    flows.on_logged(table.prefix("egress", EGRESS_ALLOW), TCP, 60, now=0.0)
    flows.on_conntrack([ConntrackEntry(*TCP, 1, 60, 1, 60)])
    (record,) = flows.flush(0, 15, live=set())  # no longer in conntrack: completed
    assert record.num_flows_completed == 1 and flows.flush(15, 30) == []


def test_prefixes_fit_the_kernel_and_networks_are_named_as_calico_names_them() -> None:
    table = HitTable()
    prefix = table.prefix("egress", Hit("a" * 60, "np:" + "n" * 60 + "/" + "p" * 200, "allow", 3))
    assert len(prefix) == 16 and table.lookup(prefix) is not None
    assert network_info("10.1.2.3").name_aggr == "pvt"
    assert network_info("8.8.8.8").name_aggr == "pub"
    assert network_info("2001:db8::1").name_aggr == "pub"


@dataclass(frozen=True)
class _Service:
    namespace: str
    name: str
    port_name: str
    port: int | None


def test_a_completer_gives_the_pending_trace_and_service_of_each_record() -> None:
    flows, table = collector()
    asked: list[tuple[Direction, FiveTuple]] = []
    staged = ("0|default|snp:data/lockdown|deny|0",)

    def complete(
        direction: Direction, key: FiveTuple
    ) -> tuple[tuple[str, ...] | None, _Service | None]:
        asked.append((direction, key))
        if direction == "ingress":  # a staged policy selects the destination only
            return staged, _Service("data", "db", "pg", 5432)
        return None, _Service("data", "db", "pg", 5432)

    flows.on_logged(table.prefix("egress", EGRESS_ALLOW), TCP, 60, now=1.0)
    flows.on_logged(table.prefix("ingress", ALLOW), TCP, 60, now=1.0)
    flows.on_conntrack([ConntrackEntry(*TCP, 1, 60, 1, 60)])
    records = {r.reporter: r for r in flows.flush(0, 15, live={TCP}, complete=complete)}
    assert sorted(asked) == [("egress", TCP), ("ingress", TCP)]
    src, dst = records["src"], records["dst"]
    assert src.pending_policies == src.enforced_policies  # None: the enforced trace
    assert dst.pending_policies == staged
    assert dst.enforced_policies == ("0|default|knp:data/stores|allow|0",)
    for record in (src, dst):
        assert (
            record.dest_service_namespace,
            record.dest_service_name,
            record.dest_service_port,
            record.dest_service_port_num,
        ) == ("data", "db", "pg", 5432)
