"""The recommendation loop, for real: the demo application without its policies runs in a lab
with its live traffic, the agents' flow logs are recorded by the server, Palisade recommends
policies from them, and the recommendation is enforced. Then no call of the traffic generator
is denied, and every pair of pods (on every declared port) that the recording never saw is
denied — by the real probe matrix.

The recording lasts ``PALISADE_RECORD_SECONDS`` (300 by default, the issue's five minutes; the
generator repeats every call every one to five seconds, so any window of several intervals
sees every call).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from palisade import lab
from palisade.datastore import open_store
from palisade.flows import FlowRecord
from palisade.recommend import RecommendOptions, recommend
from palisade.resources import apply_documents
from tests.lab.conftest import LabPlace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "demo"
RECORD_SECONDS = float(os.environ.get("PALISADE_RECORD_SECONDS", "300"))
POLICY_KINDS = {
    "NetworkPolicy",
    "GlobalNetworkPolicy",
    "StagedNetworkPolicy",
    "StagedGlobalNetworkPolicy",
    "StagedKubernetesNetworkPolicy",
    "Tier",
}
INTERVAL = 5.0


@pytest.mark.root
def test_recorded_traffic_recommended_and_enforced(lab_place: LabPlace, tmp_path: Path) -> None:
    documents = [d for d in lab.load_manifests([EXAMPLES]) if d.get("kind") not in POLICY_KINDS]
    (tmp_path / "app.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    state = lab.up(
        [tmp_path / "app.yaml"],
        state_dir=lab_place.state_dir,
        lab_id=lab_place.lab_id,
        nodes=3,
        server=True,
        flows=lab.FlowSettings(interval=INTERVAL),
    )
    assert state.server is not None
    started = time.time()
    time.sleep(RECORD_SECONDS + 2 * INTERVAL)  # the recording, and its last interval's logs
    answer = httpx.get(
        f"{state.server}/api/v1/flows", params={"since": started, "limit": 1_000_000}, timeout=60
    )
    answer.raise_for_status()
    records = [FlowRecord.from_json(r) for r in answer.json()]
    assert records and all(r.action == "allow" for r in records)  # no policy yet

    cluster = lab.documents(lab_place.state_dir)
    namespaces = tuple(
        sorted({d["metadata"]["name"] for d in cluster if d.get("kind") == "Namespace"})
    )
    result = recommend(records, cluster, RecommendOptions(enforced=True, namespaces=namespaces))
    assert result.documents
    with open_store(state.datastore) as store:
        apply_documents(store, result.documents)
    lab.wait_programmed(state, timeout=60)

    # what the recording saw, per (source pod, destination pod, port/protocol)
    seen = _seen(lab.traffic(lab_place.state_dir, window=time.time() - started + 60))
    enforced_since = time.time()
    time.sleep(6.0)  # a few rounds of every client loop under the enforced policies
    after = lab.traffic(lab_place.state_dir, window=time.time() - enforced_since)
    denied_calls = [row for row in after if row["denied"]]
    assert after and not denied_calls, f"legitimate calls denied: {denied_calls}"

    ports = sorted(
        {f"{p['port']}/{p['protocol']}" for record in state.pods.values() for p in record.ports}
    )
    matrix = lab.probe(ports, lab_place.state_dir)
    wrong = []
    for probe in matrix["probes"]:
        spec = f"{probe['port']}/{probe['protocol']}"
        for source, row in probe["allowed"].items():
            for destination, allowed in row.items():
                if source == destination:
                    continue
                if allowed != ((source, destination, spec) in seen):
                    wrong.append(f"{spec} {source} -> {destination}: allowed={allowed}")
    assert not wrong, "\n".join(wrong[:40])


def _seen(rows: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    found = set()
    for row in rows:
        destination, _, port = str(row["to"]).rpartition(":")
        port = port.replace("/HTTP", "/TCP")  # HTTP calls (through a WAF) are TCP to policy
        if row["allowed"]:
            found.add((str(row["from"]), destination, port))
    return found
