"""`palisade validate|apply|get|delete`: resources in files and in the datastore."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from palisade.datastore import DatastoreError, ResourceKey, Store, open_store
from palisade.model import load_paths
from palisade.resources import KUBERNETES_NETWORK_POLICY_KIND, apply_documents, store_key

from ._common import (
    EXIT_INVALID,
    console,
    datastore_url,
    err_console,
    fail,
    load_documents,
)

DatastoreOption = Annotated[
    str | None,
    typer.Option(
        "--datastore",
        help="sqlite:///PATH or etcd://HOST:PORT (default: $PALISADE_DATASTORE or "
        "sqlite:///palisade.db).",
    ),
]
FilesOption = Annotated[
    list[Path], typer.Option("-f", "--filename", help="Manifest file or directory (repeatable).")
]

# Short names, as kubectl and calicoctl accept them.
KIND_ALIASES = {
    "tier": "Tier",
    "tiers": "Tier",
    "networkpolicy": "NetworkPolicy",
    "networkpolicies": "NetworkPolicy",
    "netpol": "NetworkPolicy",
    "np": "NetworkPolicy",
    "globalnetworkpolicy": "GlobalNetworkPolicy",
    "globalnetworkpolicies": "GlobalNetworkPolicy",
    "gnp": "GlobalNetworkPolicy",
    "stagednetworkpolicy": "StagedNetworkPolicy",
    "stagednetworkpolicies": "StagedNetworkPolicy",
    "stagedglobalnetworkpolicy": "StagedGlobalNetworkPolicy",
    "stagedglobalnetworkpolicies": "StagedGlobalNetworkPolicy",
    "stagedkubernetesnetworkpolicy": "StagedKubernetesNetworkPolicy",
    "stagedkubernetesnetworkpolicies": "StagedKubernetesNetworkPolicy",
    "networkset": "NetworkSet",
    "networksets": "NetworkSet",
    "globalnetworkset": "GlobalNetworkSet",
    "globalnetworksets": "GlobalNetworkSet",
    "hostendpoint": "HostEndpoint",
    "hostendpoints": "HostEndpoint",
    "hep": "HostEndpoint",
    "profile": "Profile",
    "profiles": "Profile",
    "ippool": "IPPool",
    "ippools": "IPPool",
    "namespace": "Namespace",
    "namespaces": "Namespace",
    "ns": "Namespace",
    "pod": "Pod",
    "pods": "Pod",
    "po": "Pod",
    "service": "Service",
    "services": "Service",
    "svc": "Service",
    "serviceaccount": "ServiceAccount",
    "serviceaccounts": "ServiceAccount",
    "sa": "ServiceAccount",
    "deployment": "Deployment",
    "deployments": "Deployment",
    "statefulset": "StatefulSet",
    "daemonset": "DaemonSet",
}


def kind_name(text: str) -> str:
    return KIND_ALIASES.get(text.lower(), text)


def open_or_fail(url: str) -> Store:
    try:
        return open_store(url)
    except DatastoreError as exc:
        fail(str(exc), code=1)


def validate(filename: FilesOption) -> None:
    """Check manifests: every problem as `file:document: field.path: reason`; exit 2 if any."""
    if not filename:
        fail("no input: give one or more files or directories with -f")
    missing = [p for p in filename if not p.exists()]
    for path in missing:
        err_console.print(f"{path}: no such file or directory", markup=False)
    result = load_paths([p for p in filename if p.exists()])
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", markup=False, soft_wrap=True)
    for problem in result.problems:
        err_console.print(str(problem), markup=False, soft_wrap=True)
    if missing or result.problems:
        raise typer.Exit(EXIT_INVALID)
    console.print(f"{len(result.resources)} resource(s) valid")


def apply(filename: FilesOption, datastore: DatastoreOption = None) -> None:
    """Create or update resources; all documents are applied in one transaction, or none."""
    documents = load_documents(filename)
    with open_or_fail(datastore_url(datastore)) as store:
        try:
            revision = apply_documents(store, documents)
        except DatastoreError as exc:
            fail(str(exc), code=1)
    for document in documents:
        console.print(f"{store_key(document)} applied", markup=False)
    console.print(f"revision {revision}")


def get(
    kind: Annotated[str, typer.Argument(help="Kind, e.g. networkpolicy, gnp, tier, pod.")],
    name: Annotated[str | None, typer.Argument(help="Name (all if omitted).")] = None,
    namespace: Annotated[str | None, typer.Option("-n", "--namespace")] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="table, yaml or json")] = "table",
    datastore: DatastoreOption = None,
) -> None:
    """List or show resources from the datastore."""
    kinds = [kind_name(kind)]
    if kinds[0] == "NetworkPolicy":
        kinds.append(KUBERNETES_NETWORK_POLICY_KIND)
    with open_or_fail(datastore_url(datastore)) as store:
        items = [
            item
            for k in kinds
            for item in store.list(kind=k, namespace=namespace)
            if name is None or item.key.name == name
        ]
    if name is not None and not items:
        fail(f"{kind} {name!r} not found", code=1)
    values = [item.value for item in items]
    if output == "json":
        print(json.dumps(values[0] if name else {"kind": "List", "items": values}, indent=2))
    elif output == "yaml":
        print(yaml.safe_dump_all(values, sort_keys=False), end="")
    elif output == "table":
        table = Table()
        for column in ("KIND", "NAMESPACE", "NAME", "REVISION"):
            table.add_column(column)
        for item in items:
            table.add_row(
                item.key.kind, item.key.namespace or "", item.key.name, str(item.revision)
            )
        console.print(table)
    else:
        fail(f"--output {output!r}: must be table, yaml or json")


def delete(
    kind: Annotated[str | None, typer.Argument(help="Kind (or use -f).")] = None,
    name: Annotated[str | None, typer.Argument(help="Name.")] = None,
    namespace: Annotated[str | None, typer.Option("-n", "--namespace")] = None,
    filename: Annotated[
        list[Path] | None, typer.Option("-f", "--filename", help="Delete what these files name.")
    ] = None,
    datastore: DatastoreOption = None,
) -> None:
    """Delete resources named on the command line or in files (atomically)."""
    keys: list[ResourceKey] = []
    if filename:
        keys = [store_key(d) for d in load_documents(filename)]
    elif kind and name:
        resolved = kind_name(kind)
        keys = [ResourceKey(resolved, namespace, name)]
    else:
        fail("give KIND NAME or -f FILE")
    with open_or_fail(datastore_url(datastore)) as store:
        if not filename and keys[0].kind == "NetworkPolicy" and store.get(keys[0]) is None:
            keys = [ResourceKey(KUBERNETES_NETWORK_POLICY_KIND, namespace, keys[0].name)]
        missing = [k for k in keys if store.get(k) is None]
        if missing:
            fail("not found: " + ", ".join(str(k) for k in missing), code=1)
        try:
            store.apply([], deletes=keys)
        except DatastoreError as exc:
            fail(str(exc), code=1)
    for key in keys:
        console.print(f"{key} deleted", markup=False)
