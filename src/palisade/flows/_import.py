"""Importers for flow files users already have: Calico Enterprise flow logs and Hubble output.

Both formats are JSON lines. The importers are streaming and sans-I/O at heart:
:func:`iter_calico` and :func:`iter_hubble` take lines (``str`` or ``bytes``) and yield, per
non-blank line, a :class:`FlowRecord`, a :class:`Malformed` (line number and reason) or a
:class:`Skipped` (a valid line that is not a flow, such as Hubble's agent events). Nothing is
kept between lines, so a 10-million-line file never holds 10 million objects;
:func:`read_flows` collects everything into an :class:`ImportResult` for files that fit.

**Calico Enterprise** (``calico-policy.md`` §6.1): one flow-log document per line, read by
:meth:`FlowRecord.from_json`; policy hits are kept as written (legacy policy parts such as
``ns/tier.name`` or ``__PROFILE__.kns.default`` included), ``policies.all_policies`` and other
fields Palisade does not interpret go to ``extra``. ``proto`` given as a number becomes
Calico's name for it.

**Hubble** (``hubble observe -o json``; Cilium's ``flow.Flow`` message in protojson form,
field names as in the proto or in lowerCamelCase): a line is ``{"flow": {...}, "node_name":
..., "time": ...}`` or the bare flow. One flow is one observed packet, so one record covers
one event (``start_time == end_time``). The mapping:

- ``time`` (RFC 3339 or ``{seconds, nanos}``) → ``start_time``/``end_time`` (whole seconds);
- ``node_name`` → ``host``;
- ``verdict``: ``FORWARDED`` → allow, ``DROPPED`` → deny. The others: ``AUDIT`` (would have
  been dropped, audit mode let it through), ``REDIRECTED`` (to the L7 proxy, after L3/L4
  policy allowed it), ``TRACED`` and ``TRANSLATED`` (observed, not stopped) → allow;
  ``ERROR`` (the packet did not go on) → deny; ``VERDICT_UNKNOWN`` or a missing verdict is
  malformed. Any verdict other than FORWARDED/DROPPED is kept in ``extra["hubble_verdict"]``.
- ``traffic_direction``: ``INGRESS`` → reporter ``dst``, ``EGRESS`` → ``src``; unknown →
  ``dst`` if only the destination is a pod, else ``src``.
- ``is_reply``: a reply packet travels from the responder to the initiator; source and
  destination (endpoints, addresses, ports) are swapped back so the record reads initiator →
  responder, as Calico's do, and the packet counts as ``packets_in`` of a src reporter (or
  ``packets_out`` of a dst reporter) with ``num_flows`` 0. A request packet counts one
  packet the other way and ``num_flows`` 1; TCP ``SYN`` without ``ACK`` counts as started,
  ``FIN``/``RST`` (request direction) as completed. Hubble gives no byte counts.
- ``IP.source``/``IP.destination`` → ``source_ip``/``dest_ip``; ``l4``: ``TCP``/``UDP``/
  ``SCTP`` with ``source_port``/``destination_port``, ``ICMPv4``/``ICMPv6`` (no ports; type
  and code in ``extra``), ``VRRP``/``IGMP`` by protocol number.
- endpoints: ``namespace``; ``pod_name`` → ``*_name`` and type ``wep``, ``*_name_aggr`` the
  pod's generateName (the name up to its last ``-``) followed by ``*`` when ``workloads`` says
  a controller made it, else the pod name; ``labels``: ``k8s:`` labels with the prefix
  removed, other sources (``reserved:``, ``cidr:``, ``fqdn:``, ``container:`` …) dropped. No pod:
  ``reserved:host`` → ``hep`` named after the node, ``reserved:remote-node`` → ``hep``
  ``remote-node``, anything else → ``net`` named ``pvt`` (10/8, 172.16/12, 192.168/16) or
  ``pub`` (everything else, IPv6 included), as Calico names networks.
- ``destination_service`` → ``dest_service_namespace``/``dest_service_name``;
  ``destination_names`` → ``dest_domains``.
- policies: ``egress_allowed_by``/``ingress_allowed_by``/``egress_denied_by``/
  ``ingress_denied_by`` (``Policy{name, namespace, kind, labels, revision}``) become enforced
  hits ``index|default|kind:[ns/]name|allow-or-deny|-2``: egress before ingress (the order
  the dataplane applies them), ``default`` as the tier (Cilium has no tiers), rule index -2
  ("unknown", §6.2). Kinds: Kubernetes ``NetworkPolicy`` → ``knp``, ``CiliumNetworkPolicy``
  → ``cnp``, ``CiliumClusterwideNetworkPolicy`` → ``ccnp`` (Cilium's own kinds get names of
  their own rather than posing as Calico's ``np``/``gnp``); the kind comes from the
  ``kind`` field or the ``io.cilium.k8s.policy.derived-from`` label, else from whether the
  policy has a namespace.
- ``drop_reason_desc`` → ``extra["drop_reason_desc"]``; ``uuid``, ``l7`` and ``Summary`` also
  go to ``extra`` when present.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from ._record import PROTO_NAMES, FlowRecord, proto_name

FlowFormat = Literal["calico", "hubble", "auto"]


@dataclass(frozen=True, slots=True)
class Malformed:
    """A line that is not a valid record of its format."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A valid line that holds no flow (Hubble's agent, debug and lost-event lines)."""

    line: int
    reason: str


ImportItem = FlowRecord | Malformed | Skipped


@dataclass(slots=True)
class ImportResult:
    """What an import found: the records, every malformed line, and counts."""

    records: list[FlowRecord] = field(default_factory=list)
    malformed: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    lines: int = 0
    """Non-blank lines read."""

    @property
    def imported(self) -> int:
        return len(self.records)

    @property
    def malformed_count(self) -> int:
        return len(self.malformed)

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)


class _Invalid(ValueError):
    """A field of a line is missing or wrong (the message names it)."""


# -- lines -----------------------------------------------------------------------------------


def _documents(lines: Iterable[str | bytes]) -> Iterator[tuple[int, Any] | Malformed]:
    """``(line number, parsed JSON)`` for every non-blank line, or a :class:`Malformed`."""
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield Malformed(number, f"not UTF-8 ({error.reason} at byte {error.start})")
                continue
        else:
            text = raw
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as error:
            yield Malformed(number, f"not valid JSON: {error.msg} (column {error.colno})")
        except RecursionError:
            yield Malformed(number, "not valid JSON: nested too deeply")


def _open_lines(source: str | Path | Iterable[str | bytes]) -> Iterable[str | bytes]:
    if isinstance(source, str | Path):
        return _file_lines(Path(source))
    return source


def _file_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as lines:
        yield from lines


# -- Calico ----------------------------------------------------------------------------------

_INT_FIELDS = (
    "source_port",
    "dest_port",
    "dest_service_port_num",
    "bytes_in",
    "bytes_out",
    "packets_in",
    "packets_out",
    "num_flows",
    "num_flows_started",
    "num_flows_completed",
)
_STR_FIELDS = (
    "source_name",
    "source_name_aggr",
    "source_namespace",
    "dest_name",
    "dest_name_aggr",
    "dest_namespace",
    "dest_service_namespace",
    "dest_service_name",
    "dest_service_port",
    "host",
)
_TYPES = ("wep", "hep", "ns", "net")


def calico_record(document: Any) -> FlowRecord:
    """One Calico Enterprise flow-log document as a record; raises ``ValueError`` naming the
    field that is missing or wrong."""
    if not isinstance(document, dict):
        raise _Invalid(f"not a JSON object but {_json_kind(document)}")
    values = dict(document)
    for name in ("start_time", "end_time", "action", "reporter", "proto"):
        if values.get(name) is None:
            raise _Invalid(f"{name}: missing")
    for name in ("start_time", "end_time"):
        values[name] = _integer(values[name], name)
    proto = values["proto"]
    if isinstance(proto, int) and not isinstance(proto, bool):
        values["proto"] = proto_name(proto)
    elif not isinstance(proto, str) or not proto:
        raise _Invalid(f"proto: {proto!r} is not a protocol name or number")
    for name in _INT_FIELDS:
        if values.get(name) is not None:
            values[name] = _integer(values[name], name)
    for name in _STR_FIELDS:
        value = values.get(name)
        if value is None:
            values.pop(name, None)
        elif not isinstance(value, str):
            raise _Invalid(f"{name}: {value!r} is not a string")
    for name in ("source_ip", "dest_ip"):
        value = values.get(name)
        if value is not None and not isinstance(value, str):
            raise _Invalid(f"{name}: {value!r} is not an address")
    for name in ("source_type", "dest_type"):
        value = values.get(name)
        if value is None:
            values.pop(name, None)
        elif value not in _TYPES:
            raise _Invalid(f"{name}: {value!r} is not wep, hep, ns or net")
    for name in ("source_labels", "dest_labels"):
        labels = values.get(name)
        if isinstance(labels, Mapping):
            labels = labels.get("labels")
        if labels is not None and not isinstance(labels, list):
            raise _Invalid(f"{name}: not {{labels: [...]}} or a list")
    policies = values.get("policies")
    if policies is not None:
        if not isinstance(policies, Mapping):
            raise _Invalid("policies: not an object")
        for kind, hits in policies.items():
            if hits is not None and not (
                isinstance(hits, list) and all(isinstance(hit, str) for hit in hits)
            ):
                raise _Invalid(f"policies.{kind}: not a list of strings")
    try:
        return FlowRecord.from_json(values)
    except (KeyError, TypeError, ValueError) as error:
        raise _Invalid(str(error)) from error


def iter_calico(lines: Iterable[str | bytes]) -> Iterator[FlowRecord | Malformed]:
    """Calico Enterprise flow-log lines → records (or :class:`Malformed`), streaming."""
    for item in _documents(lines):
        if isinstance(item, Malformed):
            yield item
            continue
        number, document = item
        try:
            yield calico_record(document)
        except ValueError as error:
            yield Malformed(number, str(error))


# -- Hubble ----------------------------------------------------------------------------------

_ALLOW_VERDICTS = frozenset(("FORWARDED", "AUDIT", "REDIRECTED", "TRACED", "TRANSLATED"))
_DENY_VERDICTS = frozenset(("DROPPED", "ERROR"))
_L4_PROTOCOLS = {
    "TCP": "tcp",
    "UDP": "udp",
    "SCTP": "sctp",
    "ICMPv4": "icmp",
    "ICMPv6": "icmp6",
    "VRRP": proto_name(112),
    "IGMP": proto_name(2),
}
_POLICY_KINDS = {
    "NetworkPolicy": "knp",
    "CiliumNetworkPolicy": "cnp",
    "CiliumClusterwideNetworkPolicy": "ccnp",
}
_NOT_FLOWS = ("agent_event", "debug_event", "lost_events", "node_status")
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(cidr) for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
assert PROTO_NAMES[1] == "icmp"  # the names above are Calico's


def _get(mapping: Mapping[str, Any], proto_name_: str, default: Any = None) -> Any:
    """A protojson field by its proto name or its lowerCamelCase JSON name."""
    if proto_name_ in mapping:
        return mapping[proto_name_]
    return mapping.get(_camel(proto_name_), default)


def _object(mapping: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = _get(mapping, name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Invalid(f"{name}: not an object")
    return value


def _timestamp(value: Any) -> int:
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError as error:
            raise _Invalid(f"time: {value!r} is not an RFC 3339 timestamp") from error
    if isinstance(value, Mapping) and "seconds" in value:
        return _integer(value["seconds"], "time.seconds")
    raise _Invalid("time: missing" if value is None else f"time: {value!r} is not a timestamp")


def network_name(address: str | None) -> str:
    """Calico's name for an address outside every endpoint and network set: ``pvt`` or
    ``pub``."""
    if address:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return "pub"
        if parsed.version == 4 and any(parsed in net for net in _PRIVATE_NETWORKS):
            return "pvt"
    return "pub"


def generate_name_aggr(pod_name: str, generated: bool) -> str:
    """Calico's ``*_name_aggr`` for a pod: its generateName and ``*`` (a controller made it),
    or its name."""
    if generated and "-" in pod_name:
        return pod_name[: pod_name.rindex("-") + 1] + "*"
    return pod_name


@dataclass(frozen=True, slots=True)
class _Endpoint:
    name: str = "-"
    name_aggr: str = "-"
    namespace: str = "-"
    type: Literal["wep", "hep", "ns", "net"] = "net"
    labels: tuple[str, ...] = ()
    ip: str | None = None
    port: int | None = None


def _endpoint(
    document: Mapping[str, Any], ip: str | None, port: int | None, host: str
) -> _Endpoint:
    raw_labels = _get(document, "labels") or []
    if not isinstance(raw_labels, list):
        raise _Invalid("labels: not a list")
    labels = tuple(sorted(str(label)[4:] for label in raw_labels if str(label).startswith("k8s:")))
    namespace = _get(document, "namespace") or "-"
    pod_name = _get(document, "pod_name") or ""
    if pod_name:
        workloads = _get(document, "workloads") or []
        return _Endpoint(
            name=pod_name,
            name_aggr=generate_name_aggr(pod_name, bool(workloads)),
            namespace=namespace,
            type="wep",
            labels=labels,
            ip=ip,
            port=port,
        )
    if "reserved:host" in raw_labels:
        return _Endpoint(name=host, name_aggr=host, type="hep", labels=labels, ip=ip, port=port)
    if "reserved:remote-node" in raw_labels:
        return _Endpoint(name="remote-node", name_aggr="remote-node", type="hep", ip=ip, port=port)
    return _Endpoint(name_aggr=network_name(ip), labels=labels, ip=ip, port=port)


def _policy_hits(flow: Mapping[str, Any]) -> tuple[str, ...]:
    hits: list[str] = []
    for list_name, action in (
        ("egress_allowed_by", "allow"),
        ("egress_denied_by", "deny"),
        ("ingress_allowed_by", "allow"),
        ("ingress_denied_by", "deny"),
    ):
        policies = _get(flow, list_name) or []
        if not isinstance(policies, list):
            raise _Invalid(f"{list_name}: not a list")
        for policy in policies:
            if not isinstance(policy, Mapping) or not policy.get("name"):
                raise _Invalid(f"{list_name}: a policy without a name")
            namespace = policy.get("namespace") or ""
            kind = policy.get("kind") or ""
            for label in policy.get("labels") or ():
                key, _, value = str(label).partition("=")
                if key.endswith("io.cilium.k8s.policy.derived-from") and not kind:
                    kind = value
            short = _POLICY_KINDS.get(kind) or (kind.lower() if kind else "")
            if not short:
                short = "cnp" if namespace else "ccnp"
            scoped = f"{namespace}/{policy['name']}" if namespace else str(policy["name"])
            hits.append(f"{len(hits)}|default|{short}:{scoped}|{action}|-2")
    return tuple(hits)


def hubble_record(document: Any, node_name: str | None = None) -> FlowRecord | None:
    """One line of ``hubble observe -o json`` as a record; ``None`` if it holds no flow.
    Raises ``ValueError`` naming what is missing or wrong."""
    if not isinstance(document, Mapping):
        raise _Invalid(f"not a JSON object but {_json_kind(document)}")
    flow: Mapping[str, Any] = document
    if "flow" in document:
        flow = _object(document, "flow")
        node_name = _get(document, "node_name") or node_name
    elif any(key in document for key in _NOT_FLOWS) or any(
        _camel(key) in document for key in _NOT_FLOWS
    ):
        return None
    time_value = _get(flow, "time")
    if time_value is None:
        time_value = _get(document, "time")
    when = _timestamp(time_value)
    host = _get(flow, "node_name") or node_name or "-"

    verdict = _get(flow, "verdict")
    if verdict in _ALLOW_VERDICTS:
        action: Literal["allow", "deny"] = "allow"
    elif verdict in _DENY_VERDICTS:
        action = "deny"
    else:
        raise _Invalid("verdict: missing" if verdict is None else f"verdict: {verdict!r}")

    ip = _object(flow, "IP")
    source_ip = ip.get("source") or None
    dest_ip = ip.get("destination") or None
    l4 = _object(flow, "l4")
    extra: dict[str, Any] = {}
    source_port: int | None = None
    dest_port: int | None = None
    protocols = [key for key in l4 if key in _L4_PROTOCOLS]
    if len(protocols) != 1:
        raise _Invalid("l4: not one of TCP, UDP, SCTP, ICMPv4, ICMPv6, VRRP, IGMP")
    protocol = protocols[0]
    layer = l4[protocol]
    if not isinstance(layer, Mapping):
        raise _Invalid(f"l4.{protocol}: not an object")
    if protocol in ("TCP", "UDP", "SCTP"):
        source_port = _integer(_get(layer, "source_port", 0), f"l4.{protocol}.source_port")
        dest_port = _integer(_get(layer, "destination_port", 0), f"l4.{protocol}.destination_port")
    elif protocol.startswith("ICMP"):
        extra["icmp_type"] = _integer(layer.get("type", 0), f"l4.{protocol}.type")
        extra["icmp_code"] = _integer(layer.get("code", 0), f"l4.{protocol}.code")
    flags = _get(layer, "flags") or {}

    source = _endpoint(_object(flow, "source"), source_ip, source_port, host)
    dest = _endpoint(_object(flow, "destination"), dest_ip, dest_port, host)
    reply = _get(flow, "is_reply")
    if reply is None:
        reply = flow.get("reply", False)
    if reply is True:
        source, dest = dest, source

    direction = _get(flow, "traffic_direction")
    if direction == "INGRESS":
        reporter: Literal["src", "dst"] = "dst"
    elif direction == "EGRESS":
        reporter = "src"
    else:
        reporter = "dst" if dest.type == "wep" and source.type != "wep" else "src"

    # One packet: "out" of the reporter when it travels away from it.
    outward = (reporter == "src") != (reply is True)
    service = _object(flow, "destination_service")
    names = _get(flow, "destination_names") or []
    if verdict not in ("FORWARDED", "DROPPED"):
        extra["hubble_verdict"] = verdict
    for name in ("drop_reason_desc", "uuid", "l7", "Summary"):
        value = _get(flow, name)
        if value not in (None, "", "DROP_REASON_UNKNOWN"):
            extra[name] = value
    started = bool(flags.get("SYN")) and not flags.get("ACK") and reply is not True
    completed = bool(flags.get("FIN") or flags.get("RST")) and reply is not True
    return FlowRecord(
        start_time=when,
        end_time=when,
        action=action,
        reporter=reporter,
        proto=_L4_PROTOCOLS[protocol],
        source_ip=source.ip,
        source_port=source.port,
        source_name=source.name,
        source_name_aggr=source.name_aggr,
        source_namespace=source.namespace,
        source_type=source.type,
        source_labels=source.labels,
        dest_ip=dest.ip,
        dest_port=dest.port,
        dest_name=dest.name,
        dest_name_aggr=dest.name_aggr,
        dest_namespace=dest.namespace,
        dest_type=dest.type,
        dest_labels=dest.labels,
        dest_service_namespace=(service.get("namespace") or "-") if service else "-",
        dest_service_name=(service.get("name") or "-") if service else "-",
        dest_domains=tuple(str(name) for name in names) if isinstance(names, list) else (),
        enforced_policies=_policy_hits(flow),
        packets_out=1 if outward else 0,
        packets_in=0 if outward else 1,
        num_flows=0 if reply is True else 1,
        num_flows_started=int(started),
        num_flows_completed=int(completed),
        host=host,
        extra=extra,
    )


def iter_hubble(lines: Iterable[str | bytes]) -> Iterator[ImportItem]:
    """``hubble observe -o json`` lines → records (or :class:`Malformed`/:class:`Skipped`)."""
    for item in _documents(lines):
        if isinstance(item, Malformed):
            yield item
            continue
        number, document = item
        try:
            record = hubble_record(document)
        except ValueError as error:
            yield Malformed(number, str(error))
            continue
        yield record if record is not None else Skipped(number, "not a flow")


# -- files -----------------------------------------------------------------------------------


def detect_format(document: Any) -> Literal["calico", "hubble"] | None:
    """Which format a parsed line belongs to, if it says."""
    if not isinstance(document, Mapping):
        return None
    if "flow" in document or "verdict" in document or "IP" in document or "l4" in document:
        return "hubble"
    if any(key in document for key in _NOT_FLOWS):
        return "hubble"
    if "start_time" in document or "reporter" in document:
        return "calico"
    return None


def iter_flows(
    source: str | Path | Iterable[str | bytes], format: FlowFormat = "auto"
) -> Iterator[ImportItem]:
    """Records from a file or lines in ``format``; ``auto`` decides on the first line that
    says (lines before it are judged by the format found, Calico if none is)."""
    lines = _open_lines(source)
    if format == "calico":
        yield from iter_calico(lines)
        return
    if format == "hubble":
        yield from iter_hubble(lines)
        return
    buffered: list[str | bytes] = []
    chosen: Literal["calico", "hubble"] | None = None
    iterator = iter(lines)
    for raw in iterator:
        buffered.append(raw)
        try:
            chosen = detect_format(json.loads(raw))
        except (ValueError, RecursionError):
            chosen = None
        if chosen is not None:
            break
    rest = _chain(buffered, iterator)
    yield from iter_hubble(rest) if chosen == "hubble" else iter_calico(rest)


def _chain(head: list[str | bytes], tail: Iterator[str | bytes]) -> Iterator[str | bytes]:
    yield from head
    yield from tail


def read_flows(
    source: str | Path | Iterable[str | bytes], format: FlowFormat = "auto"
) -> ImportResult:
    """Every record of a file (or lines), with its malformed and skipped lines."""
    result = ImportResult()
    for item in iter_flows(source, format):
        result.lines += 1
        if isinstance(item, Malformed):
            result.malformed.append((item.line, item.reason))
        elif isinstance(item, Skipped):
            result.skipped.append((item.line, item.reason))
        else:
            result.records.append(item)
    return result


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise _Invalid(f"{name}: {value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise _Invalid(f"{name}: {value!r} is not an integer")


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


__all__ = [
    "FlowFormat",
    "ImportItem",
    "ImportResult",
    "Malformed",
    "Skipped",
    "calico_record",
    "detect_format",
    "generate_name_aggr",
    "hubble_record",
    "iter_calico",
    "iter_flows",
    "iter_hubble",
    "network_name",
    "read_flows",
]
