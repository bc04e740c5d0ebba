"""Kubernetes ``networking.k8s.io/v1`` NetworkPolicy, label selectors, and Calico's staged form.

Absent and empty are kept apart (``None`` versus ``[]``) wherever Kubernetes gives them
different meanings or where a round trip should reproduce the document.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, StrictInt, model_validator

from palisade.model._base import ResourceBase, StrictModel
from palisade.model._calico import CALICO_API_VERSION, StagedAction
from palisade.model._errors import IssueCollector
from palisade.model._validate import (
    CIDR,
    IPNetwork,
    K8sPort,
    LabelKey,
    LabelValue,
    parse_network,
)

NETWORKING_API_VERSION = "networking.k8s.io/v1"

PolicyType = Literal["Ingress", "Egress"]
L4Protocol = Literal["TCP", "UDP", "SCTP"]


class LabelSelectorRequirement(StrictModel):
    """One ``matchExpressions`` entry."""

    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> LabelSelectorRequirement:
        issues = IssueCollector()
        if self.operator in ("In", "NotIn") and not self.values:
            issues.add(("values",), f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            issues.add(("values",), f"operator {self.operator} takes no values")
        issues.raise_if_any()
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values


class LabelSelector(StrictModel):
    """A Kubernetes label selector; an empty one selects everything."""

    match_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes semantics: every matchLabels entry and every expression must hold."""
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )


class IPBlock(StrictModel):
    """A CIDR (host bits may be set, as Kubernetes allows) minus ``except`` CIDRs."""

    cidr: CIDR
    except_: list[CIDR] = Field(default_factory=list, alias="except")

    @model_validator(mode="after")
    def _check(self) -> IPBlock:
        issues = IssueCollector()
        outer = self.network
        for index, text in enumerate(self.except_):
            inner = parse_network(text, allow_bare_ip=False)
            if inner.version != outer.version or not inner.subnet_of(outer):  # type: ignore[arg-type]
                issues.add(("except", index), f"{text!r} is not inside cidr {self.cidr!r}")
        issues.raise_if_any()
        return self

    @property
    def network(self) -> IPNetwork:
        """``cidr`` as a network, host bits cleared."""
        return parse_network(self.cidr, allow_bare_ip=False)

    @property
    def except_networks(self) -> list[IPNetwork]:
        return [parse_network(text, allow_bare_ip=False) for text in self.except_]

    def contains(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether an address is in ``cidr`` and in none of the ``except`` blocks."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if ip.version != self.network.version or ip not in self.network:
            return False
        return not any(ip in net for net in self.except_networks)


class NetworkPolicyPeer(StrictModel):
    """A ``from``/``to`` entry: pods and/or namespaces, or an IP block."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    @model_validator(mode="after")
    def _check(self) -> NetworkPolicyPeer:
        issues = IssueCollector()
        if self.ip_block is not None:
            if self.pod_selector is not None or self.namespace_selector is not None:
                issues.add(
                    ("ipBlock",), "ipBlock cannot be combined with podSelector or namespaceSelector"
                )
        elif self.pod_selector is None and self.namespace_selector is None:
            issues.add((), "a peer must set podSelector, namespaceSelector or ipBlock")
        issues.raise_if_any()
        return self


class NetworkPolicyPort(StrictModel):
    """A port entry; ``protocol`` absent means TCP, ``port`` absent means all ports."""

    protocol: L4Protocol | None = None
    port: K8sPort | None = None
    end_port: StrictInt | None = None

    @model_validator(mode="after")
    def _check(self) -> NetworkPolicyPort:
        issues = IssueCollector()
        if self.end_port is not None:
            if self.port is None:
                issues.add(("endPort",), "endPort needs port")
            elif not isinstance(self.port, int):
                issues.add(("endPort",), "endPort cannot be used with a named port")
            elif not self.port <= self.end_port <= 65535:
                issues.add(("endPort",), f"endPort must be between port ({self.port}) and 65535")
        issues.raise_if_any()
        return self

    @property
    def effective_protocol(self) -> L4Protocol:
        return self.protocol or "TCP"


class NetworkPolicyIngressRule(StrictModel):
    """Absent or empty ``from`` matches all sources; absent or empty ``ports`` all ports."""

    from_: list[NetworkPolicyPeer] | None = Field(default=None, alias="from")
    ports: list[NetworkPolicyPort] | None = None


class NetworkPolicyEgressRule(StrictModel):
    """Absent or empty ``to`` matches all destinations; absent or empty ``ports`` all ports."""

    to: list[NetworkPolicyPeer] | None = None
    ports: list[NetworkPolicyPort] | None = None


class K8sNetworkPolicySpec(StrictModel):
    """Spec of a Kubernetes NetworkPolicy."""

    pod_selector: LabelSelector
    policy_types: list[PolicyType] | None = None
    ingress: list[NetworkPolicyIngressRule] | None = None
    egress: list[NetworkPolicyEgressRule] | None = None

    @model_validator(mode="after")
    def _check_types(self) -> K8sNetworkPolicySpec:
        if self.policy_types is not None and len(set(self.policy_types)) != len(self.policy_types):
            issues = IssueCollector()
            issues.add(("policyTypes",), "policyTypes must not repeat an entry")
            issues.raise_if_any()
        return self

    @property
    def effective_policy_types(self) -> list[PolicyType]:
        """``policyTypes`` as given, or what the API server would default it to."""
        if self.policy_types:
            return list(self.policy_types)
        types: list[PolicyType] = ["Ingress"]
        if self.egress:
            types.append("Egress")
        return types


class K8sNetworkPolicy(ResourceBase):
    """A Kubernetes ``networking.k8s.io/v1`` NetworkPolicy.

    Its :attr:`key` uses the kind ``KubernetesNetworkPolicy`` (Calico's internal name for
    it) so that it never collides with a Calico NetworkPolicy of the same name.
    """

    API_VERSION: ClassVar[str] = NETWORKING_API_VERSION
    NAMESPACED: ClassVar[bool] = True
    KEY_KIND: ClassVar[str] = "KubernetesNetworkPolicy"

    api_version: str = NETWORKING_API_VERSION
    kind: Literal["NetworkPolicy"] = "NetworkPolicy"
    spec: K8sNetworkPolicySpec
    # Clusters from Kubernetes 1.24-1.26 write an (always empty) status.
    status: dict[str, Any] | None = None


class StagedKubernetesNetworkPolicySpec(K8sNetworkPolicySpec):
    """A Kubernetes NetworkPolicy spec plus the staged action."""

    pod_selector: LabelSelector = Field(default_factory=LabelSelector)
    staged_action: StagedAction = "Set"

    @model_validator(mode="after")
    def _check_staged(self) -> StagedKubernetesNetworkPolicySpec:
        if self.staged_action == "Delete":
            issues = IssueCollector()
            if not self.pod_selector.is_empty:
                issues.add(("podSelector",), "must be empty when stagedAction is Delete")
            for alias, value in (("ingress", self.ingress), ("egress", self.egress)):
                if value:
                    issues.add((alias,), "must be empty when stagedAction is Delete")
            issues.raise_if_any()
        return self


class StagedKubernetesNetworkPolicy(ResourceBase):
    """A staged (preview-only) Kubernetes NetworkPolicy, in Calico's API group."""

    API_VERSION: ClassVar[str] = CALICO_API_VERSION
    NAMESPACED: ClassVar[bool] = True

    api_version: str = CALICO_API_VERSION
    kind: Literal["StagedKubernetesNetworkPolicy"] = "StagedKubernetesNetworkPolicy"
    spec: StagedKubernetesNetworkPolicySpec = Field(
        default_factory=StagedKubernetesNetworkPolicySpec
    )
