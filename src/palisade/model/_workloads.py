"""Kubernetes core and apps objects that policy refers to: namespaces, pods, services, workloads.

Only the fields that matter to network policy are typed precisely (labels, ports, IPs,
service accounts, selectors). The many other fields of real dumps (volumes, probes,
resources, tolerations, ...) are accepted loosely; keys that Kubernetes does not define are
kept and reported as warnings rather than rejected.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictInt

from palisade.model._base import LooseModel, NameRule, PodTemplateMetadata, ResourceBase
from palisade.model._k8s import L4Protocol, LabelSelector
from palisade.model._validate import K8sPort, LabelKey, LabelValue, PortName

CORE_API_VERSION = "v1"
APPS_API_VERSION = "apps/v1"


class ContainerPort(LooseModel):
    name: PortName | None = None
    container_port: StrictInt = Field(ge=1, le=65535)
    protocol: L4Protocol = "TCP"
    host_port: StrictInt | None = Field(default=None, ge=0, le=65535)
    host_ip: str | None = Field(default=None, alias="hostIP")


class Container(LooseModel):
    name: str
    image: str | None = None
    ports: list[ContainerPort] = Field(default_factory=list)
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = None
    env: list[dict[str, Any]] | None = None
    env_from: list[dict[str, Any]] | None = None
    resources: dict[str, Any] | None = None
    resize_policy: list[dict[str, Any]] | None = None
    restart_policy: str | None = None
    volume_mounts: list[dict[str, Any]] | None = None
    volume_devices: list[dict[str, Any]] | None = None
    liveness_probe: dict[str, Any] | None = None
    readiness_probe: dict[str, Any] | None = None
    startup_probe: dict[str, Any] | None = None
    lifecycle: dict[str, Any] | None = None
    termination_message_path: str | None = None
    termination_message_policy: str | None = None
    image_pull_policy: str | None = None
    security_context: dict[str, Any] | None = None
    stdin: bool | None = None
    stdin_once: bool | None = None
    tty: bool | None = None
    target_container_name: str | None = None


class PodSpec(LooseModel):
    containers: list[Container]
    init_containers: list[Container] = Field(default_factory=list)
    ephemeral_containers: list[dict[str, Any]] | None = None
    service_account_name: str | None = None
    service_account: str | None = None
    node_name: str | None = None
    host_network: StrictBool = False
    host_pid: bool | None = Field(default=None, alias="hostPID")
    host_ipc: bool | None = Field(default=None, alias="hostIPC")
    host_users: bool | None = None
    hostname: str | None = None
    subdomain: str | None = None
    volumes: list[dict[str, Any]] | None = None
    restart_policy: str | None = None
    termination_grace_period_seconds: int | None = None
    active_deadline_seconds: int | None = None
    dns_policy: str | None = None
    dns_config: dict[str, Any] | None = None
    node_selector: dict[str, str] | None = None
    automount_service_account_token: bool | None = None
    share_process_namespace: bool | None = None
    security_context: dict[str, Any] | None = None
    image_pull_secrets: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None
    scheduler_name: str | None = None
    tolerations: list[dict[str, Any]] | None = None
    host_aliases: list[dict[str, Any]] | None = None
    priority_class_name: str | None = None
    priority: int | None = None
    readiness_gates: list[dict[str, Any]] | None = None
    runtime_class_name: str | None = None
    enable_service_links: bool | None = None
    preemption_policy: str | None = None
    overhead: dict[str, Any] | None = None
    topology_spread_constraints: list[dict[str, Any]] | None = None
    set_hostname_as_fqdn: bool | None = Field(default=None, alias="setHostnameAsFQDN")
    os: dict[str, Any] | None = None
    scheduling_gates: list[dict[str, Any]] | None = None
    resource_claims: list[dict[str, Any]] | None = None
    resources: dict[str, Any] | None = None

    @property
    def effective_service_account(self) -> str:
        """The service account name (the deprecated field as fallback; ``default`` if none)."""
        return self.service_account_name or self.service_account or "default"


class PodIP(LooseModel):
    ip: str


class PodStatus(LooseModel):
    pod_ip: str | None = Field(default=None, alias="podIP")
    pod_i_ps: list[PodIP] = Field(default_factory=list, alias="podIPs")
    phase: str | None = None
    host_ip: str | None = Field(default=None, alias="hostIP")
    host_i_ps: list[dict[str, Any]] | None = Field(default=None, alias="hostIPs")
    conditions: list[dict[str, Any]] | None = None
    container_statuses: list[dict[str, Any]] | None = None
    init_container_statuses: list[dict[str, Any]] | None = None
    ephemeral_container_statuses: list[dict[str, Any]] | None = None
    qos_class: str | None = None
    start_time: str | None = None
    message: str | None = None
    reason: str | None = None
    nominated_node_name: str | None = None
    resize: str | None = None
    resource_claim_statuses: list[dict[str, Any]] | None = None
    observed_generation: int | None = None

    @property
    def ips(self) -> list[str]:
        """All pod IPs: ``podIPs`` if present, else ``podIP``."""
        if self.pod_i_ps:
            return [entry.ip for entry in self.pod_i_ps]
        return [self.pod_ip] if self.pod_ip else []


class _CoreResource(ResourceBase):
    API_VERSION: ClassVar[str] = CORE_API_VERSION
    api_version: str = CORE_API_VERSION


class Namespace(_CoreResource):
    """A namespace; its labels are what namespace selectors match."""

    model_config = ConfigDict(extra="allow")
    NAME_RULE: ClassVar[NameRule] = "label"

    kind: Literal["Namespace"] = "Namespace"
    spec: dict[str, Any] | None = None
    status: dict[str, Any] | None = None


class Pod(_CoreResource):
    """A pod: labels, named container ports, service account and IPs matter to policy."""

    model_config = ConfigDict(extra="allow")
    NAMESPACED: ClassVar[bool] = True

    kind: Literal["Pod"] = "Pod"
    spec: PodSpec
    status: PodStatus | None = None


class ServicePort(LooseModel):
    name: str | None = None
    port: StrictInt = Field(ge=1, le=65535)
    target_port: K8sPort | None = None
    protocol: L4Protocol = "TCP"
    node_port: StrictInt | None = None
    app_protocol: str | None = None


class ServiceSpec(LooseModel):
    selector: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    ports: list[ServicePort] = Field(default_factory=list)
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    cluster_i_ps: list[str] | None = Field(default=None, alias="clusterIPs")
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] | None = None
    external_i_ps: list[str] | None = Field(default=None, alias="externalIPs")
    external_name: str | None = None
    session_affinity: str | None = None
    session_affinity_config: dict[str, Any] | None = None
    load_balancer_ip: str | None = Field(default=None, alias="loadBalancerIP")
    load_balancer_source_ranges: list[str] | None = None
    load_balancer_class: str | None = None
    external_traffic_policy: str | None = None
    internal_traffic_policy: str | None = None
    health_check_node_port: int | None = None
    publish_not_ready_addresses: bool | None = None
    ip_families: list[str] | None = Field(default=None, alias="ipFamilies")
    ip_family_policy: str | None = Field(default=None, alias="ipFamilyPolicy")
    allocate_load_balancer_node_ports: bool | None = None
    traffic_distribution: str | None = None


class Service(_CoreResource):
    """A Service: its selector and ports (policy sees traffic after DNAT to the pods)."""

    model_config = ConfigDict(extra="allow")
    NAMESPACED: ClassVar[bool] = True
    NAME_RULE: ClassVar[NameRule] = "dns1035"

    kind: Literal["Service"] = "Service"
    spec: ServiceSpec = Field(default_factory=ServiceSpec)
    status: dict[str, Any] | None = None


class ServiceAccount(_CoreResource):
    """A service account; its labels are what ``serviceAccountSelector`` matches."""

    model_config = ConfigDict(extra="allow")
    NAMESPACED: ClassVar[bool] = True

    kind: Literal["ServiceAccount"] = "ServiceAccount"
    secrets: list[dict[str, Any]] | None = None
    image_pull_secrets: list[dict[str, Any]] | None = None
    automount_service_account_token: bool | None = None


class PodTemplateSpec(LooseModel):
    metadata: PodTemplateMetadata = Field(default_factory=PodTemplateMetadata)
    spec: PodSpec


class WorkloadSpec(LooseModel):
    """The spec of a Deployment, StatefulSet, DaemonSet or ReplicaSet."""

    replicas: StrictInt | None = None
    selector: LabelSelector
    template: PodTemplateSpec
    min_ready_seconds: int | None = None
    revision_history_limit: int | None = None
    strategy: dict[str, Any] | None = None
    progress_deadline_seconds: int | None = None
    paused: bool | None = None
    service_name: str | None = None
    volume_claim_templates: list[dict[str, Any]] | None = None
    pod_management_policy: str | None = None
    update_strategy: dict[str, Any] | None = None
    persistent_volume_claim_retention_policy: dict[str, Any] | None = None
    ordinals: dict[str, Any] | None = None


class _AppsResource(ResourceBase):
    model_config = ConfigDict(extra="allow")
    API_VERSION: ClassVar[str] = APPS_API_VERSION
    NAMESPACED: ClassVar[bool] = True

    api_version: str = APPS_API_VERSION
    spec: WorkloadSpec
    status: dict[str, Any] | None = None


class Deployment(_AppsResource):
    kind: Literal["Deployment"] = "Deployment"


class StatefulSet(_AppsResource):
    kind: Literal["StatefulSet"] = "StatefulSet"


class DaemonSet(_AppsResource):
    kind: Literal["DaemonSet"] = "DaemonSet"


class ReplicaSet(_AppsResource):
    kind: Literal["ReplicaSet"] = "ReplicaSet"
