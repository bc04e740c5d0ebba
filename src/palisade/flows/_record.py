"""The flow-log record: Calico Enterprise's fields, one type for every producer and consumer.

A :class:`FlowRecord` summarises the connections one node saw during one interval that share
an aggregation key (``../shared/spec/calico-policy.md`` §6.1, §6.3). Field names are Calico's,
so :meth:`FlowRecord.to_json` is a Calico flow-log document and :meth:`FlowRecord.from_json`
reads one. Conventions (as Calico's): ``"-"`` for a string that does not apply or was
aggregated away, ``None`` for an IP or port aggregated away (or a port of ICMP); labels are
``key=value`` strings (the labels every aggregated endpoint shares); policy hits are
``index|tier|policy|action|rule`` strings in Calico v3.32's form (§6.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Action = Literal["allow", "deny"]
Reporter = Literal["src", "dst", "fwd"]
EndpointType = Literal["wep", "hep", "ns", "net"]

#: Protocol numbers Calico names in ``proto``; any other protocol is written as its number.
PROTO_NAMES = {1: "icmp", 4: "ipip", 6: "tcp", 17: "udp", 50: "esp", 58: "icmp6", 132: "sctp"}
PROTO_NUMBERS = {name: number for number, name in PROTO_NAMES.items()}

_LIST_FIELDS = ("source_labels", "dest_labels", "dest_domains")


def proto_name(number: int) -> str:
    """Calico's ``proto`` value for an IP protocol number."""
    return PROTO_NAMES.get(number, str(number))


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """One flow-log record (see the module docstring for the conventions)."""

    start_time: int
    end_time: int
    action: Action
    reporter: Reporter
    proto: str
    source_ip: str | None = None
    source_port: int | None = None
    source_name: str = "-"
    source_name_aggr: str = "-"
    source_namespace: str = "-"
    source_type: EndpointType = "net"
    source_labels: tuple[str, ...] = ()
    dest_ip: str | None = None
    dest_port: int | None = None
    dest_name: str = "-"
    dest_name_aggr: str = "-"
    dest_namespace: str = "-"
    dest_type: EndpointType = "net"
    dest_labels: tuple[str, ...] = ()
    dest_service_namespace: str = "-"
    dest_service_name: str = "-"
    dest_service_port: str = "-"
    dest_service_port_num: int | None = None
    dest_domains: tuple[str, ...] = ()
    enforced_policies: tuple[str, ...] = ()
    pending_policies: tuple[str, ...] = ()
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    num_flows: int = 0
    num_flows_started: int = 0
    num_flows_completed: int = 0
    host: str = "-"
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """Fields of an imported record that Palisade keeps but does not interpret."""

    def to_json(self) -> dict[str, Any]:
        """The record as a Calico flow-log document."""
        document = asdict(self)
        extra = document.pop("extra")
        for name in ("source_labels", "dest_labels"):
            document[name] = {"labels": list(document[name])}
        document["dest_domains"] = list(document["dest_domains"])
        document["policies"] = {
            "enforced_policies": list(document.pop("enforced_policies")),
            "pending_policies": list(document.pop("pending_policies")),
        }
        return {**extra, **document}

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> FlowRecord:
        """Read a Calico flow-log document; raises ``ValueError``/``KeyError``/``TypeError``
        naming the field that is missing or wrong."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in document.items():
            if key in known:
                values[key] = value
            elif key == "policies":
                policies = value or {}
                values["enforced_policies"] = tuple(policies.get("enforced_policies") or ())
                values["pending_policies"] = tuple(policies.get("pending_policies") or ())
                if policies.get("all_policies"):
                    extra["all_policies"] = list(policies["all_policies"])
            else:
                extra[key] = value
        for name in ("source_labels", "dest_labels"):
            labels = values.get(name)
            if isinstance(labels, Mapping):
                labels = labels.get("labels")
            values[name] = tuple(str(label) for label in labels or ())
        values["dest_domains"] = tuple(str(d) for d in values.get("dest_domains") or ())
        for name in ("start_time", "end_time"):
            values[name] = int(values[name])
        if values.get("action") not in ("allow", "deny"):
            raise ValueError(f"action: {values.get('action')!r} is not allow or deny")
        if values.get("reporter") not in ("src", "dst", "fwd"):
            raise ValueError(f"reporter: {values.get('reporter')!r} is not src, dst or fwd")
        return cls(**values, extra=extra)


__all__ = [
    "PROTO_NAMES",
    "PROTO_NUMBERS",
    "Action",
    "EndpointType",
    "FlowRecord",
    "Reporter",
    "proto_name",
]
