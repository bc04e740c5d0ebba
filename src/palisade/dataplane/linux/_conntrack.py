"""Conntrack, read: the connections a namespace's kernel tracks, with their counters.

The flow collector's byte and packet counts. Counting needs ``net.netfilter.nf_conntrack_acct``
on in the namespace (:func:`enable_accounting`); :func:`read_conntrack` dumps the table through
pyroute2's conntrack socket opened in the namespace.
"""

from __future__ import annotations

from typing import Any

from pyroute2 import Conntrack

from palisade.flows._collect import ConntrackEntry

from ._model import NetlinkError
from ._netns import write_sysctl


def enable_accounting(netns: str | None) -> None:
    """Count bytes and packets per connection (``nf_conntrack_acct``) in ``netns``."""
    write_sysctl(netns, "net.netfilter.nf_conntrack_acct", "1")


def _attrs(message: Any, name: str) -> Any:
    value = message.get_attr(name)
    if value is None:
        raise ValueError(f"conntrack entry without {name}")
    return value


def entry_of(message: Any) -> ConntrackEntry:
    """One dumped conntrack message as a :class:`ConntrackEntry` (``ValueError`` when a part is
    missing)."""
    orig = _attrs(message, "CTA_TUPLE_ORIG")
    ip = _attrs(orig, "CTA_TUPLE_IP")
    proto = _attrs(orig, "CTA_TUPLE_PROTO")
    source = ip.get_attr("CTA_IP_V4_SRC") or ip.get_attr("CTA_IP_V6_SRC")
    destination = ip.get_attr("CTA_IP_V4_DST") or ip.get_attr("CTA_IP_V6_DST")
    if source is None or destination is None:
        raise ValueError("conntrack entry without addresses")
    counts: list[int] = []
    for name in ("CTA_COUNTERS_ORIG", "CTA_COUNTERS_REPLY"):
        counters = message.get_attr(name)
        packets = counters.get_attr("CTA_COUNTERS_PACKETS") if counters is not None else None
        size = counters.get_attr("CTA_COUNTERS_BYTES") if counters is not None else None
        counts.extend((int(packets or 0), int(size or 0)))
    return ConntrackEntry(
        protocol=int(proto.get_attr("CTA_PROTO_NUM")),
        source=str(source),
        source_port=proto.get_attr("CTA_PROTO_SRC_PORT"),
        destination=str(destination),
        destination_port=proto.get_attr("CTA_PROTO_DST_PORT"),
        packets_out=counts[0],
        bytes_out=counts[1],
        packets_in=counts[2],
        bytes_in=counts[3],
    )


def read_conntrack(netns: str | None) -> list[ConntrackEntry]:
    """Every connection the kernel of ``netns`` tracks now."""
    try:
        socket = Conntrack(netns=netns) if netns else Conntrack()
    except OSError as exc:
        raise NetlinkError("conntrack", f"netns {netns}", str(exc), exc.errno) from exc
    try:
        entries = []
        for message in socket.dump():
            try:
                entries.append(entry_of(message))
            except ValueError:
                continue  # not an IP connection we can name
        return entries
    finally:
        socket.close()
