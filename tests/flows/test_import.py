"""Importers: Calico Enterprise flow logs and Hubble JSON, field by field; malformed lines;
streaming; format detection."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from palisade.flows import FlowRecord
from palisade.flows._import import (
    Malformed,
    Skipped,
    calico_record,
    detect_format,
    generate_name_aggr,
    hubble_record,
    iter_calico,
    iter_flows,
    iter_hubble,
    network_name,
    read_flows,
)
from palisade.flowstore import FlowStore

DATA = Path(__file__).parent / "data"
CALICO = DATA / "calico_flows.ndjson"
HUBBLE = DATA / "hubble_flows.ndjson"


# -- Calico ----------------------------------------------------------------------------------


def test_calico_file() -> None:
    result = read_flows(CALICO, "calico")
    assert result.lines == 13  # the blank line is not counted
    assert result.imported == 6
    assert result.skipped == []
    assert result.malformed == [
        (7, "not valid JSON: Expecting value (column 1)"),
        (8, "action: 'maybe' is not allow or deny"),
        (9, "end_time: missing"),
        (10, "not a JSON object but an array"),
        (11, "bytes_in: 'lots' is not an integer"),
        (12, "source_type: 'pod' is not wep, hep, ns or net"),
        (14, "policies.enforced_policies: not a list of strings"),
    ]
    assert result.malformed_count == 7


def test_calico_record_field_by_field() -> None:
    first = read_flows(CALICO).records[0]
    assert first == FlowRecord(
        start_time=1717243200,
        end_time=1717243500,
        action="allow",
        reporter="dst",
        proto="tcp",
        source_name_aggr="frontend-6f7d9c8b4-*",
        source_namespace="shop",
        source_type="wep",
        source_labels=(
            "app=frontend",
            "pod-template-hash=6f7d9c8b4",
            "projectcalico.org/namespace=shop",
        ),
        dest_port=8080,
        dest_name_aggr="cart-5b8c7d6f9-*",
        dest_namespace="shop",
        dest_type="wep",
        dest_labels=("app=cart", "projectcalico.org/namespace=shop"),
        dest_service_namespace="shop",
        dest_service_name="cart",
        dest_service_port="http",
        dest_service_port_num=80,
        # The legacy policy part (<namespace>/<tier>.<name>) is kept as written.
        enforced_policies=("0|default|shop/default.allow-frontend|allow|0",),
        pending_policies=("0|default|shop/default.allow-frontend|allow|0",),
        bytes_in=48211,
        bytes_out=913822,
        packets_in=512,
        packets_out=734,
        num_flows=12,
        num_flows_started=9,
        num_flows_completed=8,
        host="worker-1",
    )
    assert first.extra["all_policies"] == ["0|default|shop/default.allow-frontend|allow|0"]
    assert first.extra["process_name"] == "-"
    assert first.extra["http_requests_allowed_in"] == 0


def test_calico_edge_cases() -> None:
    records = read_flows(CALICO).records
    denied, icmp, ipv6, minimal, sctp = records[1:]
    assert denied.enforced_policies[1] == "1|default|dev/knp.default.default-deny|deny|-1"
    assert denied.pending_policies[1] == "1|default|dev/staged:default.lockdown|deny|0"
    assert (icmp.proto, icmp.source_port, icmp.dest_port) == ("icmp", None, None)
    assert icmp.enforced_policies == ("0|__PROFILE__|__PROFILE__.kns.ops|allow|0",)
    assert (ipv6.source_ip, ipv6.dest_ip, ipv6.dest_domains) == (
        "fd00:10:244:3::1a",
        "2606:4700::6810:85e5",
        ("api.stripe.com",),
    )
    assert minimal == FlowRecord(
        start_time=1717243500,
        end_time=1717243800,
        action="deny",
        reporter="dst",
        proto="udp",
        dest_port=53,
        source_name="blocklist",
        source_name_aggr="blocklist",
        source_type="ns",
        dest_name_aggr="coredns-5d78c9869d-*",
        dest_namespace="kube-system",
        dest_type="wep",
        enforced_policies=("0|default|gnp:default.block-listed|deny|0",),
        packets_in=2,
        num_flows=2,
    )
    assert sctp.proto == "sctp" and sctp.dest_port == 38412


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"proto": 47}, None),
        ({"proto": 17}, None),
        ({"proto": ""}, "proto: '' is not a protocol name or number"),
        ({"proto": None}, "proto: missing"),
        ({"start_time": "1717243200"}, None),
        ({"start_time": 1.5}, "start_time: 1.5 is not an integer"),
        ({"start_time": True}, "start_time: True is not an integer"),
        ({"reporter": "fwd"}, None),
        ({"reporter": "both"}, "reporter: 'both' is not src, dst or fwd"),
        ({"source_port": "x"}, "source_port: 'x' is not an integer"),
        ({"source_ip": 10}, "source_ip: 10 is not an address"),
        ({"host": 5}, "host: 5 is not a string"),
        ({"host": None}, None),
        ({"dest_labels": "app=x"}, "dest_labels: not {labels: [...]} or a list"),
        ({"dest_labels": ["app=x"]}, None),
        ({"policies": []}, "policies: not an object"),
        ({"policies": None}, None),
    ],
)
def test_calico_field_validation(changes: dict[str, Any], reason: str | None) -> None:
    document = {
        "start_time": 1,
        "end_time": 2,
        "action": "allow",
        "reporter": "src",
        "proto": "tcp",
        **changes,
    }
    if reason is None:
        calico_record(document)
    else:
        with pytest.raises(ValueError) as error:
            calico_record(document)
        assert str(error.value) == reason


def test_calico_proto_numbers_become_names() -> None:
    base = {"start_time": 1, "end_time": 2, "action": "allow", "reporter": "src"}
    assert calico_record({**base, "proto": 17}).proto == "udp"
    assert calico_record({**base, "proto": 47}).proto == "47"


def test_calico_round_trip_of_palisade_records() -> None:
    records = read_flows(CALICO).records
    lines = [json.dumps(record.to_json()) for record in records]
    again = [item for item in iter_calico(lines)]
    assert again == records
    assert [r.extra for r in again] == [r.extra for r in records]


def test_store_fast_path_reads_what_the_importer_reads() -> None:
    importer = read_flows(CALICO)
    with FlowStore() as store:
        result = store.ingest_ndjson(CALICO)
        stored = sorted(store.query(), key=repr)
    # The fast path checks the required fields; an optional field of the wrong type reads as
    # absent there (lines 11 and 14), where the importer rejects the line.
    assert [line for line, _ in result.malformed] == [7, 8, 9, 10, 12]
    assert result.added == importer.imported + 2
    for record in importer.records:
        assert record in stored


# -- Hubble ----------------------------------------------------------------------------------


def test_hubble_file() -> None:
    result = read_flows(HUBBLE, "hubble")
    assert result.lines == 18  # the blank line is not counted
    assert result.imported == 10
    assert result.skipped == [(11, "not a flow"), (12, "not a flow")]
    assert result.malformed == [
        (14, "verdict: missing"),
        (15, "time: missing"),
        (16, "l4: not one of TCP, UDP, SCTP, ICMPv4, ICMPv6, VRRP, IGMP"),
        (17, "time: 'yesterday' is not an RFC 3339 timestamp"),
        (18, "not valid JSON: Expecting ',' delimiter (column 1)"),
        (19, "not a JSON object but a number"),
    ]


def hubble_records() -> list[FlowRecord]:
    return read_flows(HUBBLE, "hubble").records


def test_hubble_egress_syn_field_by_field() -> None:
    first = hubble_records()[0]
    assert first == FlowRecord(
        start_time=1717243201,  # 2024-06-01T12:00:01.123456789Z, whole seconds
        end_time=1717243201,
        action="allow",
        reporter="src",
        proto="tcp",
        source_ip="10.0.1.23",
        source_port=43512,
        source_name="frontend-6f7d9c8b4-7xkq2",
        source_name_aggr="frontend-6f7d9c8b4-*",
        source_namespace="shop",
        source_type="wep",
        source_labels=(
            "app=frontend",
            "io.cilium.k8s.policy.serviceaccount=frontend",
            "io.kubernetes.pod.namespace=shop",
            "pod-template-hash=6f7d9c8b4",
        ),
        dest_ip="10.0.2.45",
        dest_port=8080,
        dest_name="cart-5b8c7d6f9-l9vzt",
        dest_name_aggr="cart-5b8c7d6f9-*",
        dest_namespace="shop",
        dest_type="wep",
        dest_labels=("app=cart", "io.kubernetes.pod.namespace=shop"),
        dest_service_namespace="shop",
        dest_service_name="cart",
        enforced_policies=("0|default|cnp:shop/frontend-egress|allow|-2",),
        packets_out=1,
        num_flows=1,
        num_flows_started=1,
        host="kind-worker",
    )
    assert first.extra == {
        "uuid": "5c1e3f0a-1b2c-4d5e-8f90-a1b2c3d4e5f6",
        "Summary": "TCP Flags: SYN",
    }


def test_hubble_reply_reads_initiator_to_responder() -> None:
    request, reply = hubble_records()[:2]
    assert (reply.source_name, reply.source_port, reply.dest_name, reply.dest_port) == (
        request.source_name,
        request.source_port,
        request.dest_name,
        request.dest_port,
    )
    assert (reply.source_ip, reply.dest_ip) == (request.source_ip, request.dest_ip)
    assert (reply.packets_in, reply.packets_out, reply.num_flows) == (1, 0, 0)
    assert reply.num_flows_started == 0


def test_hubble_drop_with_policy() -> None:
    dropped = hubble_records()[2]
    assert (dropped.action, dropped.reporter, dropped.host) == ("deny", "dst", "kind-worker2")
    assert dropped.enforced_policies == ("0|default|cnp:db/postgres-lockdown|deny|-2",)
    assert dropped.extra["drop_reason_desc"] == "POLICY_DENIED"
    assert (dropped.source_name_aggr, dropped.dest_name_aggr) == ("debug-shell", "postgres-*")
    assert dropped.packets_in == 1 and dropped.packets_out == 0


def test_hubble_bare_flow_udp_service_and_policy_kinds() -> None:
    dns = hubble_records()[3]
    assert (dns.proto, dns.source_port, dns.dest_port) == ("udp", 51820, 53)
    assert (dns.dest_service_namespace, dns.dest_service_name) == ("kube-system", "kube-dns")
    assert dns.host == "kind-worker"
    assert dns.start_time == 1717243203
    assert dns.enforced_policies == (
        "0|default|knp:shop/allow-dns|allow|-2",
        "1|default|ccnp:cluster-dns|allow|-2",
    )


def test_hubble_icmp_ipv6_world_and_host() -> None:
    icmp4, tls6, icmp6, from_host, audit, camel = hubble_records()[4:]
    assert (icmp4.proto, icmp4.source_port, icmp4.dest_port) == ("icmp", None, None)
    assert icmp4.extra == {"icmp_type": 8, "icmp_code": 0}
    assert (icmp4.dest_type, icmp4.dest_name_aggr, icmp4.dest_namespace) == ("net", "pvt", "-")
    assert (tls6.dest_type, tls6.dest_name_aggr) == ("net", "pub")
    assert tls6.dest_domains == ("api.stripe.com",)
    assert tls6.dest_labels == ()  # reserved: and fqdn: labels are dropped
    assert (icmp6.proto, icmp6.reporter, icmp6.source_name_aggr) == ("icmp6", "dst", "pinger")
    assert icmp6.source_labels == ()
    assert icmp6.enforced_policies == ("0|default|cnp:shop/allow-icmp|allow|-2",)
    assert (from_host.source_type, from_host.source_name, from_host.source_name_aggr) == (
        "hep",
        "kind-worker",
        "kind-worker",
    )
    assert (audit.action, audit.extra["hubble_verdict"], audit.reporter) == (
        "allow",
        "AUDIT",
        "dst",
    )
    assert (audit.source_type, audit.source_name_aggr) == ("net", "pub")
    assert camel.start_time == 1717243209
    assert (camel.action, camel.reporter, camel.host) == ("deny", "src", "kind-worker2")
    assert (camel.source_port, camel.dest_port, camel.dest_name) == (40000, 9999, "postgres-0")
    assert camel.enforced_policies == ("0|default|knp:dev/dev-egress|deny|-2",)


def flow(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "time": "2024-06-01T12:00:00Z",
        "verdict": "FORWARDED",
        "IP": {"source": "10.0.0.1", "destination": "10.0.0.2"},
        "l4": {"TCP": {"source_port": 1000, "destination_port": 80}},
        "traffic_direction": "EGRESS",
    }
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("verdict", "action"),
    [
        ("FORWARDED", "allow"),
        ("DROPPED", "deny"),
        ("AUDIT", "allow"),
        ("REDIRECTED", "allow"),
        ("TRACED", "allow"),
        ("TRANSLATED", "allow"),
        ("ERROR", "deny"),
    ],
)
def test_hubble_verdicts(verdict: str, action: str) -> None:
    record = hubble_record(flow(verdict=verdict))
    assert record is not None and record.action == action


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"verdict": "VERDICT_UNKNOWN"}, "verdict: 'VERDICT_UNKNOWN'"),
        ({"l4": {"TCP": {}, "UDP": {}}}, "l4: not one of"),
        ({"l4": {"TCP": {"source_port": "x"}}}, "l4.TCP.source_port: 'x' is not an integer"),
        ({"l4": {"TCP": 5}}, "l4.TCP: not an object"),
        ({"source": []}, "source: not an object"),
        ({"source": {"labels": "k8s:a=b"}}, "labels: not a list"),
        ({"egress_allowed_by": {"name": "p"}}, "egress_allowed_by: not a list"),
        ({"egress_allowed_by": [{"namespace": "x"}]}, "egress_allowed_by: a policy without"),
        ({"time": 5}, "time: 5 is not a timestamp"),
    ],
)
def test_hubble_malformed_fields(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError) as error:
        hubble_record(flow(**fields))
    assert str(error.value).startswith(reason)


def test_hubble_other_protocols_and_directions() -> None:
    sctp = hubble_record(flow(l4={"SCTP": {"source_port": 5, "destination_port": 38412}}))
    assert sctp is not None and (sctp.proto, sctp.dest_port) == ("sctp", 38412)
    vrrp = hubble_record(flow(l4={"VRRP": {}}))
    assert vrrp is not None and vrrp.proto == "112"
    unknown = hubble_record(
        flow(
            traffic_direction="TRAFFIC_DIRECTION_UNKNOWN",
            destination={"pod_name": "x", "namespace": "n"},
        )
    )
    assert unknown is not None and unknown.reporter == "dst"
    both = hubble_record(
        flow(traffic_direction=None, source={"pod_name": "a"}, destination={"pod_name": "b"})
    )
    assert both is not None and both.reporter == "src"
    fin = hubble_record(
        flow(
            l4={
                "TCP": {
                    "source_port": 1,
                    "destination_port": 2,
                    "flags": {"FIN": True, "ACK": True},
                }
            }
        )
    )
    assert fin is not None and (fin.num_flows_started, fin.num_flows_completed) == (0, 1)
    remote = hubble_record(flow(source={"labels": ["reserved:remote-node"]}))
    assert remote is not None and (remote.source_type, remote.source_name_aggr) == (
        "hep",
        "remote-node",
    )
    derived = hubble_record(
        flow(
            egress_allowed_by=[
                {
                    "name": "p",
                    "labels": ["k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy"],
                    "namespace": "ns",
                },
                {"name": "q", "kind": "SomethingNew"},
            ]
        )
    )
    assert derived is not None and derived.enforced_policies == (
        "0|default|cnp:ns/p|allow|-2",
        "1|default|somethingnew:q|allow|-2",
    )
    assert hubble_record({"debug_event": {}}) is None
    assert hubble_record({"lostEvents": {}}) is None


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("10.1.2.3", "pvt"),
        ("172.16.0.1", "pvt"),
        ("172.32.0.1", "pub"),
        ("192.168.9.9", "pvt"),
        ("8.8.8.8", "pub"),
        ("fd00::1", "pub"),
        ("not-an-ip", "pub"),
        (None, "pub"),
    ],
)
def test_network_names(address: str | None, name: str) -> None:
    assert network_name(address) == name


def test_generate_name_aggr() -> None:
    assert generate_name_aggr("web-7d9f8c6b5-x2k4p", True) == "web-7d9f8c6b5-*"
    assert generate_name_aggr("postgres-0", True) == "postgres-*"
    assert generate_name_aggr("debug-shell", False) == "debug-shell"
    assert generate_name_aggr("solo", True) == "solo"


# -- lines, streaming, formats ---------------------------------------------------------------


def test_bytes_lines_and_bad_utf8() -> None:
    good = json.dumps(flow()).encode()
    items = list(iter_hubble([good + b"\n", b"\xff\xfe\n", b"  \n", good]))
    assert [type(item) for item in items] == [FlowRecord, Malformed, FlowRecord]
    assert isinstance(items[1], Malformed) and items[1].line == 2
    assert items[1].reason.startswith("not UTF-8")


def test_streaming_does_not_read_ahead() -> None:
    line = json.dumps(flow())

    def endless() -> Iterator[str]:
        while True:
            yield line

    first = list(itertools.islice(iter_flows(endless()), 3))
    assert len(first) == 3 and all(isinstance(item, FlowRecord) for item in first)
    calico_line = json.dumps(read_flows(CALICO).records[0].to_json())
    assert len(list(itertools.islice(iter_calico(itertools.repeat(calico_line)), 5))) == 5


def test_format_detection() -> None:
    assert read_flows(CALICO).imported == 6
    assert read_flows(HUBBLE).imported == 10
    assert read_flows(str(HUBBLE)).imported == 10
    assert detect_format({"flow": {}}) == "hubble"
    assert detect_format({"start_time": 1}) == "calico"
    assert detect_format({"agent_event": {}}) == "hubble"
    assert detect_format([1]) is None
    assert detect_format({"x": 1}) is None
    # Lines before the first one that says are judged by the format found.
    lines = ["garbage", json.dumps(flow())]
    items = list(iter_flows(lines))
    assert isinstance(items[0], Malformed) and isinstance(items[1], FlowRecord)
    # Nothing says: Calico.
    assert read_flows(["[]", "{}"]).malformed == [
        (1, "not a JSON object but an array"),
        (2, "start_time: missing"),
    ]
    assert read_flows([]).lines == 0


def test_skipped_items_carry_line_numbers() -> None:
    items = list(iter_hubble(['{"agent_event": {}}', json.dumps(flow())]))
    assert items[0] == Skipped(1, "not a flow")
