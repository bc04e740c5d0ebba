"""The model base classes and Kubernetes object metadata."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from palisade.model._errors import IssueCollector
from palisade.model._validate import (
    LabelKey,
    LabelValue,
    dns_1035_label_problem,
    dns_label_problem,
    dns_subdomain_problem,
)


class StrictModel(BaseModel):
    """Base of every model: camelCase keys in documents, unknown keys rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, alias_generator=to_camel, frozen=True
    )


class LooseModel(StrictModel):
    """Base for the parts of workload objects that carry many fields Palisade ignores.

    Unknown keys are kept (and reported by the loader as warnings, not errors).
    """

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _drop_null_extras(self) -> LooseModel:
        # An unknown key set to null means "unset", as Kubernetes reads it; dropping it here
        # keeps a resource equal to itself after a round trip through ``to_document``.
        extra = self.__pydantic_extra__
        if extra:
            for key in [key for key, value in extra.items() if value is None]:
                del extra[key]
        return self


NameRule = Literal["subdomain", "label", "dns1035"]

_NAME_CHECKS = {
    "subdomain": dns_subdomain_problem,
    "label": dns_label_problem,
    "dns1035": dns_1035_label_problem,
}
_CLUSTER_SCOPED = "this kind is cluster-scoped and must not have a namespace"


class _MetaBase(StrictModel):
    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    annotations: dict[LabelKey, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: StrictInt | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: StrictInt | None = None
    self_link: str | None = None
    owner_references: list[dict[str, Any]] | None = None
    managed_fields: list[dict[str, Any]] | None = None
    finalizers: list[str] | None = None

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str | None) -> str | None:
        if value is not None:
            problem = dns_label_problem(value)
            if problem is not None:
                raise ValueError(problem)
        return value


class ObjectMeta(_MetaBase):
    """Standard Kubernetes object metadata; ``name`` is required.

    The fields that ``kubectl get -o yaml`` writes (uid, resourceVersion, managedFields and
    so on) are accepted and kept, so dumps of live clusters load unchanged.
    """

    name: str

    # The loader passes the resource's naming rules in the validation context, so a bad
    # name is reported even when other metadata fields (labels, say) are wrong too.
    # Without a context, ``ResourceBase`` checks the same rules once metadata is valid.
    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str, info: ValidationInfo) -> str:
        rule = _context(info).get("name_rule")
        if rule in _NAME_CHECKS:
            problem = _NAME_CHECKS[rule](value)
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("namespace")
    @classmethod
    def _check_scope(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and _context(info).get("namespaced") is False:
            raise ValueError(_CLUSTER_SCOPED)
        return value


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


class PodTemplateMetadata(_MetaBase):
    """Metadata inside a workload's pod template, where ``name`` is optional."""


class ResourceBase(StrictModel):
    """Fields and helpers shared by every top-level resource.

    Subclasses set ``API_VERSION``, ``NAMESPACED`` and ``NAME_RULE``, and narrow ``kind`` to
    a literal. ``KEY_KIND`` overrides the kind used in :attr:`key` where two API groups
    share a kind name (Kubernetes and Calico ``NetworkPolicy``).
    """

    API_VERSION: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = False
    NAME_RULE: ClassVar[NameRule] = "subdomain"
    KEY_KIND: ClassVar[str] = ""

    api_version: str
    kind: str
    metadata: ObjectMeta

    # Field validators (not a model validator) so that these problems are reported even
    # when other fields, such as spec, fail too.
    @field_validator("api_version")
    @classmethod
    def _check_api_version(cls, value: str) -> str:
        if cls.API_VERSION and value != cls.API_VERSION:
            raise ValueError(f"apiVersion here must be {cls.API_VERSION!r}")
        return value

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, metadata: ObjectMeta) -> ObjectMeta:
        issues = IssueCollector()
        problem = _NAME_CHECKS[cls.NAME_RULE](metadata.name)
        if problem is not None:
            issues.add(("name",), problem)
        if not cls.NAMESPACED and metadata.namespace is not None:
            issues.add(("namespace",), _CLUSTER_SCOPED)
        issues.raise_if_any()
        return metadata

    @property
    def namespace(self) -> str | None:
        """The effective namespace: ``default`` if unset; None for cluster-scoped kinds."""
        if not type(self).NAMESPACED:
            return None
        return self.metadata.namespace or "default"

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def key(self) -> tuple[str, str | None, str]:
        """(kind, namespace, name): unique within a set of loaded resources."""
        return (type(self).KEY_KIND or self.kind, self.namespace, self.metadata.name)

    def to_document(self) -> dict[str, Any]:
        """The resource as a JSON-ready document, with the keys users write."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
