"""Cluster-wide Kubernetes policy: AdminNetworkPolicy, BaselineAdminNetworkPolicy (v1alpha1)
and ClusterNetworkPolicy (v1alpha2), from the ``policy.networking.k8s.io`` API group.

Shapes follow the network-policy-api types (spec 5.3, 5.4). These APIs are still alpha, so
``status`` is kept as free-form data; everything in ``spec`` is checked strictly.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, StrictInt, model_validator

from palisade.model._base import ResourceBase, StrictModel
from palisade.model._errors import IssueCollector
from palisade.model._k8s import L4Protocol, LabelSelector
from palisade.model._validate import CIDR, PortName, PrefixWildcardDomain

ADMIN_API_VERSION = "policy.networking.k8s.io/v1alpha1"
CLUSTER_API_VERSION = "policy.networking.k8s.io/v1alpha2"

Priority = StrictInt


def _exactly_one(issues: IssueCollector, values: dict[str, object]) -> None:
    present = [alias for alias, value in values.items() if value is not None]
    if len(present) != 1:
        names = ", ".join(values)
        if present:
            issues.add((present[1],), f"exactly one of {names} may be set")
        else:
            issues.add((), f"exactly one of {names} must be set")


class NamespacedPod(StrictModel):
    """Pods chosen by a namespace selector AND a pod selector (empty selects all)."""

    namespace_selector: LabelSelector = Field(default_factory=LabelSelector)
    pod_selector: LabelSelector


class AdminNetworkPolicySubject(StrictModel):
    """The pods a policy applies to: exactly one of ``namespaces`` and ``pods``."""

    namespaces: LabelSelector | None = None
    pods: NamespacedPod | None = None

    @model_validator(mode="after")
    def _check(self) -> AdminNetworkPolicySubject:
        issues = IssueCollector()
        _exactly_one(issues, {"namespaces": self.namespaces, "pods": self.pods})
        issues.raise_if_any()
        return self


class AdminNetworkPolicyPortNumber(StrictModel):
    protocol: L4Protocol = "TCP"
    port: StrictInt = Field(ge=1, le=65535)


class AdminNetworkPolicyPortRange(StrictModel):
    protocol: L4Protocol = "TCP"
    start: StrictInt = Field(ge=1, le=65535)
    end: StrictInt = Field(ge=1, le=65535)

    @model_validator(mode="after")
    def _check(self) -> AdminNetworkPolicyPortRange:
        if self.start >= self.end:
            issues = IssueCollector()
            issues.add(("end",), "end must be greater than start")
            issues.raise_if_any()
        return self


class AdminNetworkPolicyPort(StrictModel):
    """Exactly one of ``portNumber``, ``portRange`` and ``namedPort``."""

    port_number: AdminNetworkPolicyPortNumber | None = None
    port_range: AdminNetworkPolicyPortRange | None = None
    named_port: PortName | None = None

    @model_validator(mode="after")
    def _check(self) -> AdminNetworkPolicyPort:
        issues = IssueCollector()
        _exactly_one(
            issues,
            {
                "portNumber": self.port_number,
                "portRange": self.port_range,
                "namedPort": self.named_port,
            },
        )
        issues.raise_if_any()
        return self


class AdminNetworkPolicyIngressPeer(StrictModel):
    """Exactly one of ``namespaces`` and ``pods``."""

    namespaces: LabelSelector | None = None
    pods: NamespacedPod | None = None

    @model_validator(mode="after")
    def _check(self) -> AdminNetworkPolicyIngressPeer:
        issues = IssueCollector()
        _exactly_one(issues, {"namespaces": self.namespaces, "pods": self.pods})
        issues.raise_if_any()
        return self


class AdminNetworkPolicyEgressPeer(StrictModel):
    """Exactly one of ``namespaces``, ``pods``, ``nodes`` and ``networks``."""

    namespaces: LabelSelector | None = None
    pods: NamespacedPod | None = None
    nodes: LabelSelector | None = None
    networks: list[CIDR] | None = Field(default=None, min_length=1, max_length=25)

    @model_validator(mode="after")
    def _check(self) -> AdminNetworkPolicyEgressPeer:
        issues = IssueCollector()
        _exactly_one(
            issues,
            {
                "namespaces": self.namespaces,
                "pods": self.pods,
                "nodes": self.nodes,
                "networks": self.networks,
            },
        )
        issues.raise_if_any()
        return self


class AdminNetworkPolicyIngressRule(StrictModel):
    name: str = Field(default="", max_length=100)
    action: Literal["Allow", "Deny", "Pass"]
    from_: list[AdminNetworkPolicyIngressPeer] = Field(alias="from", min_length=1, max_length=100)
    ports: list[AdminNetworkPolicyPort] | None = Field(default=None, min_length=1, max_length=100)


class AdminNetworkPolicyEgressRule(StrictModel):
    name: str = Field(default="", max_length=100)
    action: Literal["Allow", "Deny", "Pass"]
    to: list[AdminNetworkPolicyEgressPeer] = Field(min_length=1, max_length=100)
    ports: list[AdminNetworkPolicyPort] | None = Field(default=None, min_length=1, max_length=100)


class AdminNetworkPolicySpec(StrictModel):
    priority: Priority = Field(ge=0, le=1000)
    subject: AdminNetworkPolicySubject
    ingress: list[AdminNetworkPolicyIngressRule] = Field(default_factory=list, max_length=100)
    egress: list[AdminNetworkPolicyEgressRule] = Field(default_factory=list, max_length=100)


class AdminNetworkPolicy(ResourceBase):
    """A cluster-wide policy evaluated before NetworkPolicies (v3.29-v3.31 in Calico)."""

    API_VERSION: ClassVar[str] = ADMIN_API_VERSION

    api_version: str = ADMIN_API_VERSION
    kind: Literal["AdminNetworkPolicy"] = "AdminNetworkPolicy"
    spec: AdminNetworkPolicySpec
    status: dict[str, Any] | None = None


class BaselineAdminNetworkPolicyIngressRule(StrictModel):
    name: str = Field(default="", max_length=100)
    action: Literal["Allow", "Deny"]
    from_: list[AdminNetworkPolicyIngressPeer] = Field(alias="from", min_length=1, max_length=100)
    ports: list[AdminNetworkPolicyPort] | None = Field(default=None, min_length=1, max_length=100)


class BaselineAdminNetworkPolicyEgressRule(StrictModel):
    name: str = Field(default="", max_length=100)
    action: Literal["Allow", "Deny"]
    to: list[AdminNetworkPolicyEgressPeer] = Field(min_length=1, max_length=100)
    ports: list[AdminNetworkPolicyPort] | None = Field(default=None, min_length=1, max_length=100)


class BaselineAdminNetworkPolicySpec(StrictModel):
    subject: AdminNetworkPolicySubject
    ingress: list[BaselineAdminNetworkPolicyIngressRule] = Field(
        default_factory=list, max_length=100
    )
    egress: list[BaselineAdminNetworkPolicyEgressRule] = Field(default_factory=list, max_length=100)


class BaselineAdminNetworkPolicy(ResourceBase):
    """The cluster's default policy, evaluated after NetworkPolicies."""

    API_VERSION: ClassVar[str] = ADMIN_API_VERSION

    api_version: str = ADMIN_API_VERSION
    kind: Literal["BaselineAdminNetworkPolicy"] = "BaselineAdminNetworkPolicy"
    spec: BaselineAdminNetworkPolicySpec
    status: dict[str, Any] | None = None


# ------------------------------------------------------------ ClusterNetworkPolicy


class ClusterNetworkPolicyPortRange(StrictModel):
    start: StrictInt = Field(ge=1, le=65535)
    end: StrictInt = Field(ge=1, le=65535)

    @model_validator(mode="after")
    def _check(self) -> ClusterNetworkPolicyPortRange:
        if self.start >= self.end:
            issues = IssueCollector()
            issues.add(("end",), "end must be greater than start")
            issues.raise_if_any()
        return self


class ClusterNetworkPolicyPort(StrictModel):
    """Exactly one of ``number`` and ``range``."""

    number: StrictInt | None = Field(default=None, ge=1, le=65535)
    range: ClusterNetworkPolicyPortRange | None = None

    @model_validator(mode="after")
    def _check(self) -> ClusterNetworkPolicyPort:
        issues = IssueCollector()
        _exactly_one(issues, {"number": self.number, "range": self.range})
        issues.raise_if_any()
        return self


class ClusterNetworkPolicyProtocolPorts(StrictModel):
    """The ``tcp``/``udp``/``sctp`` entry; no ``destinationPort`` means all ports."""

    destination_port: ClusterNetworkPolicyPort | None = None


class ClusterNetworkPolicyProtocol(StrictModel):
    """Exactly one of ``tcp``, ``udp``, ``sctp`` and ``destinationNamedPort``."""

    tcp: ClusterNetworkPolicyProtocolPorts | None = None
    udp: ClusterNetworkPolicyProtocolPorts | None = None
    sctp: ClusterNetworkPolicyProtocolPorts | None = None
    destination_named_port: PortName | None = None

    @model_validator(mode="after")
    def _check(self) -> ClusterNetworkPolicyProtocol:
        issues = IssueCollector()
        _exactly_one(
            issues,
            {
                "tcp": self.tcp,
                "udp": self.udp,
                "sctp": self.sctp,
                "destinationNamedPort": self.destination_named_port,
            },
        )
        issues.raise_if_any()
        return self


class ClusterNetworkPolicyIngressPeer(StrictModel):
    """Exactly one of ``namespaces`` and ``pods``."""

    namespaces: LabelSelector | None = None
    pods: NamespacedPod | None = None

    @model_validator(mode="after")
    def _check(self) -> ClusterNetworkPolicyIngressPeer:
        issues = IssueCollector()
        _exactly_one(issues, {"namespaces": self.namespaces, "pods": self.pods})
        issues.raise_if_any()
        return self


class ClusterNetworkPolicyEgressPeer(StrictModel):
    """Exactly one of ``namespaces``, ``pods``, ``nodes``, ``networks``, ``domainNames``."""

    namespaces: LabelSelector | None = None
    pods: NamespacedPod | None = None
    nodes: LabelSelector | None = None
    networks: list[CIDR] | None = Field(default=None, min_length=1, max_length=25)
    domain_names: list[PrefixWildcardDomain] | None = Field(
        default=None, min_length=1, max_length=25
    )

    @model_validator(mode="after")
    def _check(self) -> ClusterNetworkPolicyEgressPeer:
        issues = IssueCollector()
        _exactly_one(
            issues,
            {
                "namespaces": self.namespaces,
                "pods": self.pods,
                "nodes": self.nodes,
                "networks": self.networks,
                "domainNames": self.domain_names,
            },
        )
        issues.raise_if_any()
        return self


ClusterNetworkPolicyAction = Literal["Accept", "Deny", "Pass"]


class ClusterNetworkPolicyIngressRule(StrictModel):
    name: str = Field(default="", max_length=100)
    action: ClusterNetworkPolicyAction
    from_: list[ClusterNetworkPolicyIngressPeer] = Field(alias="from", min_length=1, max_length=25)
    protocols: list[ClusterNetworkPolicyProtocol] | None = Field(
        default=None, min_length=1, max_length=25
    )


class ClusterNetworkPolicyEgressRule(StrictModel):
    name: str = Field(default="", max_length=100)
    action: ClusterNetworkPolicyAction
    to: list[ClusterNetworkPolicyEgressPeer] = Field(min_length=1, max_length=25)
    protocols: list[ClusterNetworkPolicyProtocol] | None = Field(
        default=None, min_length=1, max_length=25
    )

    @model_validator(mode="after")
    def _check(self) -> ClusterNetworkPolicyEgressRule:
        issues = IssueCollector()
        named = any(p.destination_named_port is not None for p in self.protocols or [])
        if named:
            for index, peer in enumerate(self.to):
                if peer.networks is not None or peer.nodes is not None or peer.domain_names:
                    issues.add(
                        ("to", index),
                        "networks, nodes and domainNames peers cannot be used with "
                        "destinationNamedPort",
                    )
        issues.raise_if_any()
        return self


class ClusterNetworkPolicySpec(StrictModel):
    tier: Literal["Admin", "Baseline"]
    priority: Priority = Field(ge=0, le=1000)
    subject: AdminNetworkPolicySubject
    ingress: list[ClusterNetworkPolicyIngressRule] = Field(default_factory=list, max_length=25)
    egress: list[ClusterNetworkPolicyEgressRule] = Field(default_factory=list, max_length=25)


class ClusterNetworkPolicy(ResourceBase):
    """The v1alpha2 successor of AdminNetworkPolicy and BaselineAdminNetworkPolicy."""

    API_VERSION: ClassVar[str] = CLUSTER_API_VERSION

    api_version: str = CLUSTER_API_VERSION
    kind: Literal["ClusterNetworkPolicy"] = "ClusterNetworkPolicy"
    spec: ClusterNetworkPolicySpec
    status: dict[str, Any] | None = None


#: The subject of a ClusterNetworkPolicy has the same shape as an AdminNetworkPolicy's.
ClusterNetworkPolicySubject = AdminNetworkPolicySubject
