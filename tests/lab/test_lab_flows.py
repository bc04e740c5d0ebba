"""Flow logs from the kernel, for real: a lab whose agents report to a running `palisade
server`. Every probe of a run shows up in the flow store within two intervals, reported by the
node of each end, with the action and the tier/policy/rule trace the policy engine gives for
that flow; denied attempts carry their denying rule; the bytes of a transfer agree with what
the traffic generator sent; a staged policy that would deny a pair shows in the pending trace
of that pair's records (and nowhere else) while enforcement still allows it; and flows to a
Service's pod on its target port name the Service."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from palisade import lab
from palisade.policy import Cluster, Flow, PolicyEngine
from tests.lab.conftest import LabPlace
from tests.server.conftest import ServerProcess

INTERVAL = 2.0
PAYLOAD = 2_000_000
HEADERS = 20 + 32  # IPv4 and TCP (with the timestamp option) per packet


def _pod(namespace: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
    }


MANIFESTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "front"}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "back"}},
    _pod("front", "web", {"app": "web"}),
    _pod("back", "db", {"app": "db"}),
    _pod("back", "batch", {"app": "batch"}),
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "db-from-front", "namespace": "back"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "front"}
                            }
                        }
                    ],
                    "ports": [{"port": 8080}],
                }
            ],
        },
    },
    {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "batch-quarantine"},
        "spec": {
            "selector": "app == 'batch'",
            "types": ["Egress"],
            "egress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [8080]}}],
        },
    },
    {  # a preview: would deny front → db; never enforced, seen only in pending traces
        "apiVersion": "projectcalico.org/v3",
        "kind": "StagedNetworkPolicy",
        "metadata": {"name": "db-lockdown", "namespace": "back"},
        "spec": {
            "order": 10,
            "selector": "app == 'db'",
            "types": ["Ingress"],
            "ingress": [
                {
                    "action": "Deny",
                    "protocol": "TCP",
                    "source": {"namespaceSelector": "kubernetes.io/metadata.name == 'front'"},
                }
            ],
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "db", "namespace": "back"},
        "spec": {
            "selector": {"app": "db"},
            "ports": [{"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    },
]
STAGED_DENY = "0|default|snp:back/db-lockdown|deny|0"

SEND = """
import socket, sys
total = int(sys.argv[2])
with socket.create_connection((sys.argv[1], 8080), timeout=10) as conn:
    sent = 0
    chunk = b"x" * 65536
    while sent < total:
        sent += conn.send(chunk[: total - sent])
    conn.shutdown(socket.SHUT_WR)
    received = 0
    while data := conn.recv(65536):
        received += len(data)
print(sent, received)
"""


def _records(url: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/flows", params={"limit": 100000}, timeout=10)
    answer.raise_for_status()
    return list(answer.json())


@pytest.mark.root
def test_flow_logs_match_probes_policies_and_bytes(
    lab_place: LabPlace, server_process: ServerProcess, tmp_path: Path
) -> None:
    server_process.start()
    (tmp_path / "m.yaml").write_text(yaml.safe_dump_all(MANIFESTS, sort_keys=False))
    settings = lab.FlowSettings(
        interval=INTERVAL, allowed_level=0, denied_level=0, server=server_process.url
    )
    state = lab.up(
        [tmp_path / "m.yaml"],
        state_dir=lab_place.state_dir,
        lab_id=lab_place.lab_id,
        nodes=2,
        flows=settings,
    )
    pods = {key: str(record.ip) for key, record in state.pods.items()}
    assert len({record.node for record in state.pods.values()}) == 2  # cross-node pairs exist

    matrix = lab.probe(["8080/TCP"], lab_place.state_dir)["probes"][0]["allowed"]
    transfer = subprocess.run(
        lab.exec_command(
            "front/web",
            [sys.executable, "-c", SEND, pods["back/db"], str(PAYLOAD)],
            lab_place.state_dir,
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert transfer.stdout.split() == [str(PAYLOAD), str(PAYLOAD)]

    engine = PolicyEngine(Cluster.from_documents(lab.documents(lab_place.state_dir)))
    names = {ip: key for key, ip in pods.items()}
    deadline = time.monotonic() + 3 * INTERVAL + 30  # generous: only a failure waits it out
    while True:
        records = _records(server_process.url)
        seen = {
            (r["reporter"], names.get(r["source_ip"]), names.get(r["dest_ip"]))
            for r in records
            if r["dest_port"] == 8080
        }
        wanted = {
            (reporter, source, destination)
            for source in pods
            for destination in pods
            if source != destination
            for reporter in _reporters(engine, pods, source, destination)
        }
        if (wanted <= seen and min(_transfer(records, names)) >= 0.98 * PAYLOAD) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.5)
    assert wanted <= seen, f"missing from the flow store: {sorted(wanted - seen)}"

    mismatches = []
    for record in records:
        source, destination = names.get(record["source_ip"]), names.get(record["dest_ip"])
        if record["dest_port"] != 8080 or source is None or destination is None:
            continue
        verdict = engine.evaluate(_flow(pods, source, destination))
        result = verdict.egress if record["reporter"] == "src" else verdict.ingress
        assert result is not None
        expected_action = "allow" if result.allowed else "deny"
        hits = record["policies"]["enforced_policies"]
        if (record["action"], hits) != (expected_action, result.policy_strings()):
            mismatches.append(
                f"{record['reporter']} {source} -> {destination}: flow log {record['action']} "
                f"{hits}, engine {expected_action} {result.policy_strings()}"
            )
        if record["reporter"] == "dst":
            assert record["action"] == ("allow" if matrix[source][destination] else "deny")
    assert not mismatches, "\n".join(mismatches)

    # the pending trace: the staged policy previews a deny of front → db at db's end only
    previewed = served = 0
    for record in records:
        source, destination = names.get(record["source_ip"]), names.get(record["dest_ip"])
        if record["dest_port"] != 8080 or source is None or destination is None:
            continue
        policies = record["policies"]
        where = f"{record['reporter']} {source} -> {destination}: {policies}"
        if (record["reporter"], source, destination) == ("dst", "front/web", "back/db"):
            verdict = engine.evaluate(_flow(pods, source, destination))
            assert verdict.allowed and not verdict.pending_allowed
            assert verdict.pending_ingress is not None
            assert record["action"] == "allow", where
            assert policies["pending_policies"] == [STAGED_DENY], where
            assert policies["pending_policies"] == verdict.pending_ingress.policy_strings()
            previewed += 1
        else:
            assert policies["pending_policies"] == policies["enforced_policies"], where
        service = (
            record["dest_service_namespace"],
            record["dest_service_name"],
            record["dest_service_port"],
            record["dest_service_port_num"],
        )
        if destination == "back/db":  # 8080 is the pod's port "http", the Service's target
            assert service == ("back", "db", "web", 80), where
            served += 1
        else:
            assert service == ("-", "-", "-", None), where
    assert previewed and served

    denied = [
        r for r in records if r["action"] == "deny" and names.get(r["source_ip"]) == "back/batch"
    ]
    assert denied and all(
        r["policies"]["enforced_policies"][-1].endswith("|gnp:batch-quarantine|deny|0")
        for r in denied
    )

    # the transfer: the payload the generator sent, as each end's node counted it, within 2 %
    sent, received = _transfer(records, names)
    between = [
        (r["reporter"], r["source_port"], r["bytes_out"], r["packets_out"], r["bytes_in"])
        for r in records
        if names.get(r["source_ip"]) == "front/web" and names.get(r["dest_ip"]) == "back/db"
    ]
    for counted in (sent, received):
        assert abs(counted - PAYLOAD) <= 0.02 * PAYLOAD, (counted, PAYLOAD, between)
    print(json.dumps({"sent": sent, "received": received, "payload": PAYLOAD}))


def _flow(pods: dict[str, str], source: str, destination: str) -> Flow:
    return Flow(
        ipaddress.ip_address(pods[source]), ipaddress.ip_address(pods[destination]), 6, 8080
    )


def _reporters(
    engine: PolicyEngine, pods: dict[str, str], source: str, destination: str
) -> tuple[str, ...]:
    """Who reports a flow: the source's node always; the destination's when egress let the
    packet leave."""
    egress = engine.evaluate(_flow(pods, source, destination)).egress
    return ("src", "dst") if egress is None or egress.allowed else ("src",)


def _transfer(records: list[dict[str, Any]], names: dict[str, str]) -> tuple[int, int]:
    """Payload bytes from front/web to back/db, as the source's node and the destination's
    counted them. Flow logs count IP bytes, headers included, per packet the kernel saw (one
    per segment, or one per offloaded super-segment): the IPv4 and TCP headers (20 + 32 bytes
    with timestamps) of each counted packet are taken off, so what is compared is what the
    generator wrote, however the kernel segmented it."""
    between = [
        r
        for r in records
        if names.get(r["source_ip"]) == "front/web" and names.get(r["dest_ip"]) == "back/db"
    ]
    return (
        sum(r["bytes_out"] - HEADERS * r["packets_out"] for r in between if r["reporter"] == "src"),
        sum(r["bytes_in"] - HEADERS * r["packets_in"] for r in between if r["reporter"] == "dst"),
    )
