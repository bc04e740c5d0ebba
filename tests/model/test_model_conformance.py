"""Every manifest of the Kubernetes NetworkPolicy conformance cases loads without problems."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from palisade.model import (
    K8sNetworkPolicy,
    Namespace,
    Pod,
    Service,
    load_text,
    parse_document,
)

CASES_DIR = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "k8s-netpol-conformance" / "cases"
)
PLACEHOLDER = re.compile(r"\$\{([a-z]+)/([a-z]+)\.ip\}")


def case_files() -> list[Path]:
    if not CASES_DIR.is_dir():
        raise FileNotFoundError(
            f"conformance data missing: {CASES_DIR} (../shared must be beside the repo)"
        )
    return sorted(CASES_DIR.glob("*.json"))


def test_all_34_cases_are_present() -> None:
    assert len(case_files()) == 34


def pod_ip(namespace: str, pod: str) -> str:
    """The README's suggested assignment: x/a=10.244.0.10 ... z/c=10.244.2.12."""
    return f"10.244.{'xyz'.index(namespace)}.{10 + 'abc'.index(pod)}"


def substitute(value: Any) -> Any:
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: pod_ip(m[1], m[2]), value)
    if isinstance(value, list):
        return [substitute(v) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v) for k, v in value.items()}
    return value


def model_documents(case: dict[str, Any]) -> list[dict[str, Any]]:
    """Namespaces, pods and services of the case's model, as Kubernetes objects."""
    detail = case["model_detail"]
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": info["labels"]},
        }
        for ns, info in detail["namespaces"].items()
    ]
    for info in detail["pods"].values():
        ip = substitute(info["ip"])
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": info["name"],
                    "namespace": info["namespace"],
                    "labels": info["labels"],
                },
                "spec": {"containers": info["containers"]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
            }
        )
        service = info["service"]
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": service["name"], "namespace": info["namespace"]},
                "spec": {"selector": service["selector"], "ports": service["ports"]},
            }
        )
    return docs


@pytest.mark.parametrize("path", case_files(), ids=lambda p: p.stem)
def test_case_manifests_parse(path: Path) -> None:
    case = json.loads(path.read_text())
    policies_seen = 0
    for step in case["steps"]:
        for manifest in substitute(step["policies"]):
            policy = parse_document(manifest, source=path.name)
            assert isinstance(policy, K8sNetworkPolicy)
            assert policy.to_document() == parse_document(policy.to_document()).to_document()
            policies_seen += 1
        # The whole step as one multi-document YAML file, as a user would write it.
        documents = model_documents(case) + substitute(step["policies"])
        result = load_text(yaml.safe_dump_all(documents), f"{path.stem}-{step['index']}.yaml")
        assert result.problems == []
        assert result.warnings == []
        assert len(result.resources) == len(documents)
    assert policies_seen or case["steps"][0]["policy_changes"] == []
    kinds = {type(r) for r in load_text(json.dumps(model_documents(case)), "m.json").resources}
    assert kinds == {Namespace, Pod, Service}
