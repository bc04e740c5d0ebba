"""What-if agrees with reality: the demo application runs in a lab with its policies and live
traffic; what-if replays the recorded flow logs through the staged policies (the demo stages
``postgres-orders-only``); then the staged set is enforced, and the calls the lab denies from
then on are exactly the ones denied before plus the ones what-if predicted would change to
deny — on the same traffic generator."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from palisade import lab
from palisade.datastore import open_store
from palisade.flows import FlowRecord
from palisade.resources import apply_documents, store_key
from palisade.whatif import ALLOW_TO_DENY, DENY_TO_ALLOW, whatif
from tests.lab.conftest import LabPlace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "demo"
INTERVAL = 5.0
RECORD_SECONDS = 20.0
ENFORCED_KIND = {
    "StagedNetworkPolicy": ("projectcalico.org/v3", "NetworkPolicy"),
    "StagedGlobalNetworkPolicy": ("projectcalico.org/v3", "GlobalNetworkPolicy"),
    "StagedKubernetesNetworkPolicy": ("networking.k8s.io/v1", "NetworkPolicy"),
}


def _enforce_staged(documents: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """The staged policies as the enforced ones they stand for (``stagedAction: Delete``:
    the enforced policy of that name goes)."""
    writes, deletes = [], []
    for document in documents:
        if document.get("kind") not in ENFORCED_KIND:
            continue
        api_version, kind = ENFORCED_KIND[document["kind"]]
        spec = dict(document.get("spec") or {})
        action = spec.pop("stagedAction", "Set")
        meta = {k: v for k, v in document["metadata"].items() if k in ("name", "namespace")}
        enforced = {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec}
        if action == "Delete":
            deletes.append(store_key(enforced))
        else:
            writes.append(enforced)
    return writes, deletes


def _workload(pod: str) -> str:
    namespace, name = pod.split("/", 1)
    stem, _, index = name.rpartition("-")
    return f"{namespace}/{stem}-*" if index.isdigit() else f"{namespace}/{name}"


def _denied_calls(rows: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(source workload, destination workload, port/proto) of the calls that were denied."""
    found = set()
    for row in rows:
        if row["denied"]:
            destination, _, port = str(row["to"]).rpartition(":")
            found.add((_workload(str(row["from"])), _workload(destination), port.lower()))
    return found


@pytest.mark.root
def test_whatif_predicts_what_enforcing_the_staged_set_denies(lab_place: LabPlace) -> None:
    state = lab.up(
        [EXAMPLES],
        state_dir=lab_place.state_dir,
        lab_id=lab_place.lab_id,
        nodes=3,
        server=True,
        flows=lab.FlowSettings(interval=INTERVAL),
    )
    assert state.server is not None
    started = time.time()
    time.sleep(RECORD_SECONDS + 2 * INTERVAL)
    answer = httpx.get(
        f"{state.server}/api/v1/flows", params={"since": started, "limit": 1_000_000}, timeout=60
    )
    answer.raise_for_status()
    records = [FlowRecord.from_json(r) for r in answer.json()]
    documents = lab.documents(lab_place.state_dir)
    report = whatif(records, documents, staged=True)
    assert report.records == len(records) and report.unknown_flows == 0, report.unknown
    predicted = {
        (pair.source, pair.destination, port.lower())
        for pair in report.by_pair
        if pair.change == ALLOW_TO_DENY
        for port in pair.ports
    }
    freed = {
        (pair.source, pair.destination, port.lower())
        for pair in report.by_pair
        if pair.change == DENY_TO_ALLOW
        for port in pair.ports
    }
    assert predicted, "the demo's staged policy changes something"
    before = _denied_calls(lab.traffic(lab_place.state_dir, window=time.time() - started))

    writes, deletes = _enforce_staged(documents)
    with open_store(state.datastore) as store:
        apply_documents(store, writes, deletes=deletes)
    lab.wait_programmed(state, timeout=60)
    enforced_since = time.time()
    time.sleep(6.0)
    after = _denied_calls(lab.traffic(lab_place.state_dir, window=time.time() - enforced_since))

    called = {
        (
            _workload(str(row["from"])),
            _workload(str(row["to"]).rpartition(":")[0]),
            str(row["to"]).rpartition(":")[2].lower(),
        )
        for row in lab.traffic(lab_place.state_dir, window=time.time() - started)
    }
    assert after == ((before | predicted) - freed) & called, (
        f"before {sorted(before)}\npredicted {sorted(predicted)}\nafter {sorted(after)}"
    )
