"""Locating ../shared (the read-only data beside the repository) for tests and benchmarks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the tests read ../shared beside the repository (CI lays it there)"
        )
    return path


CONFORMANCE_DIR = SHARED / "data" / "k8s-netpol-conformance" / "cases"
_PLACEHOLDER = re.compile(r"\$\{([a-z0-9-]+/[a-z0-9-]+)\.ip\}")


def conformance_cases() -> list[Path]:
    return sorted(shared_path("data", "k8s-netpol-conformance", "cases").glob("*.json"))


def conformance_ips(case: dict[str, Any]) -> dict[str, str]:
    """The README's convenient assignment: namespace i → 10.244.i.0/24, pod j → .10+j."""
    namespaces = case["model_params"]["namespaces"]
    pods = case["model_params"]["pod_names"]
    return {
        f"{ns}/{pod}": f"10.244.{i}.{10 + j}"
        for i, ns in enumerate(namespaces)
        for j, pod in enumerate(pods)
    }


def substitute(value: Any, ips: dict[str, str]) -> Any:
    """Replace ``${ns/pod.ip}`` placeholders throughout a JSON value."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: ips[m.group(1)], value)
    if isinstance(value, list):
        return [substitute(v, ips) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, ips) for k, v in value.items()}
    return value


def conformance_step_documents(
    case: dict[str, Any], step_index: int, ips: dict[str, str]
) -> list[dict[str, Any]]:
    """Namespace, Pod and NetworkPolicy documents in effect during one step (model changes of
    this and earlier steps applied)."""
    detail = case["model_detail"]
    ns_labels = {ns: dict(v["labels"]) for ns, v in detail["namespaces"].items()}
    pod_labels = {key: dict(v["labels"]) for key, v in detail["pods"].items()}
    for step in case["steps"][: step_index + 1]:
        for change in step.get("model_changes", []):
            if change["op"] == "add_namespace_label":
                ns_labels[change["namespace"]][change["key"]] = change["value"]
            elif change["op"] == "add_pod_labels":
                pod_labels[change["pod"]].update(change["labels"])
            else:
                raise ValueError(f"unknown model change {change['op']!r}")
    documents: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
        for ns, labels in ns_labels.items()
    ]
    for key, pod in detail["pods"].items():
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod["name"],
                    "namespace": pod["namespace"],
                    "labels": pod_labels[key],
                },
                "spec": {"containers": pod["containers"]},
                "status": {"podIP": ips[key], "podIPs": [{"ip": ips[key]}]},
            }
        )
    documents.extend(substitute(case["steps"][step_index]["policies"], ips))
    return documents


def load_case(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
