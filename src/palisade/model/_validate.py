"""Value checks shared by the resource models: names, labels, ports, CIDRs, selectors.

Each ``*_problem`` function returns ``None`` for a valid value or a short reason; the
``parse_*``/``check_*`` functions are pydantic validators and raise ``ValueError``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_PORT_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_DIGITS = re.compile(r"[0-9]+")
_PORT_RANGE = re.compile(r"([0-9]+):([0-9]+)")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_]*[A-Za-z0-9])?")
_GLOBAL_ONLY = re.compile(r"[ \t]*global\(\)[ \t]*")

MAX_SELECTOR_LENGTH = 1024

#: Calico protocol names (case-sensitive) and their IP protocol numbers.
PROTOCOL_NUMBERS: dict[str, int] = {
    "TCP": 6,
    "UDP": 17,
    "ICMP": 1,
    "ICMPv6": 58,
    "SCTP": 132,
    "UDPLite": 136,
}
PORT_PROTOCOLS = frozenset({6, 17, 132})


# ---------------------------------------------------------------------------- names


def dns_label_problem(name: str) -> str | None:
    """A DNS-1123 label: lower-case letters, digits and '-', at most 63 characters."""
    if not name:
        return "must not be empty"
    if len(name) > 63:
        return "must be at most 63 characters (a DNS-1123 label)"
    if not _DNS_LABEL.fullmatch(name):
        return (
            f"{name!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )
    return None


def dns_1035_label_problem(name: str) -> str | None:
    """A DNS-1035 label: like a DNS-1123 label but starting with a letter."""
    if not name:
        return "must not be empty"
    if len(name) > 63:
        return "must be at most 63 characters (a DNS-1035 label)"
    if not _DNS_1035_LABEL.fullmatch(name):
        return (
            f"{name!r} is not a DNS-1035 label (lower-case letters, digits and '-', "
            "starting with a letter and ending with a letter or digit)"
        )
    return None


def dns_subdomain_problem(name: str) -> str | None:
    """A DNS-1123 subdomain: dot-separated DNS labels, at most 253 characters."""
    if not name:
        return "must not be empty"
    if len(name) > 253:
        return "must be at most 253 characters (a DNS-1123 subdomain)"
    if not all(_DNS_LABEL.fullmatch(part) for part in name.split(".")):
        return (
            f"{name!r} is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', "
            "each dot-separated part starting and ending with a letter or digit)"
        )
    return None


def label_key_problem(key: str) -> str | None:
    """A Kubernetes qualified name: optional DNS-subdomain prefix and '/', then a name."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return f"label key {key!r} has an empty prefix before '/'"
        if dns_subdomain_problem(prefix) is not None:
            return f"label key prefix {prefix!r} is not a DNS-1123 subdomain"
    if not name:
        return f"label key {key!r} has an empty name"
    if len(name) > 63:
        return f"label key name {name!r} is longer than 63 characters"
    if not _QUALIFIED_NAME.fullmatch(name):
        return (
            f"label key name {name!r} must consist of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """A Kubernetes label value: empty, or up to 63 name characters."""
    if value == "":
        return None
    if len(value) > 63:
        return f"label value {value!r} is longer than 63 characters"
    if not _QUALIFIED_NAME.fullmatch(value):
        return (
            f"label value {value!r} must consist of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def port_name_problem(name: str) -> str | None:
    """The Kubernetes port-name rule (IANA service name)."""
    if not name:
        return "port name must not be empty"
    if len(name) > 15:
        return f"port name {name!r} is longer than 15 characters"
    if not _PORT_NAME.fullmatch(name):
        return (
            f"port name {name!r} must consist of lower-case letters, digits and single '-' "
            "(not at the start or end)"
        )
    if not any("a" <= c <= "z" for c in name):
        return f"port name {name!r} must contain at least one letter"
    return None


def domain_problem(name: str) -> str | None:
    """An exact domain name, or one with a single '*' standing for a whole label."""
    if not name:
        return "domain name must not be empty"
    if len(name) > 253:
        return f"domain name {name[:40]!r}... is longer than 253 characters"
    labels = name.split(".")
    if labels.count("*") > 1:
        return f"domain name {name!r} may contain at most one '*'"
    for label in labels:
        if label == "*":
            continue
        if "*" in label:
            return f"domain name {name!r}: '*' must be a whole label"
        if len(label) > 63 or not _DOMAIN_LABEL.fullmatch(label):
            return f"domain name {name!r} has an invalid label {label!r}"
    return None


def prefix_wildcard_domain_problem(name: str) -> str | None:
    """A ClusterNetworkPolicy domain name: two or more labels, '*' only as a leading label."""
    labels = name.removeprefix("*.").removesuffix(".").split(".")
    if len(name) > 253 or len(labels) < 2:
        return (
            f"domain name {name[:60]!r} must have at least two labels (and at most 253 characters)"
        )
    for label in labels:
        if len(label) > 63 or not _DOMAIN_LABEL.fullmatch(label):
            return f"domain name {name!r} has an invalid label {label!r} ('*' only as a prefix)"
    return None


# ------------------------------------------------------------------------- networks


def parse_network(text: str, *, allow_bare_ip: bool) -> IPNetwork:
    """Parse a CIDR (host bits may be set), or a bare IP when allowed; raise ValueError."""
    address, slash, prefix = text.partition("/")
    if "%" in text or text != text.strip() or not address:
        raise ValueError(f"{text!r} is not a valid CIDR")
    if slash:
        if not _DIGITS.fullmatch(prefix) or len(prefix) > 3:
            raise ValueError(f"{text!r} is not a valid CIDR (bad prefix length)")
    elif not allow_bare_ip:
        raise ValueError(f"{text!r} is not a CIDR (expected address/prefix-length)")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid CIDR") from None


def check_calico_net(text: str) -> str:
    parse_network(text, allow_bare_ip=True)
    return text


def check_cidr(text: str) -> str:
    parse_network(text, allow_bare_ip=False)
    return text


def check_ip(text: str) -> str:
    if "%" in text:
        raise ValueError(f"{text!r} is not a valid IP address")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid IP address") from None
    return text


# ---------------------------------------------------------------------------- ports


def _port_number(text: str) -> int | None:
    """The number in an all-digit string, or None when it is out of range."""
    digits = text.lstrip("0") or "0"
    if len(digits) > 5:
        return None
    value = int(digits)
    return value if value <= 65535 else None


def parse_calico_port(value: object) -> int | str:
    """A Calico rule port: number, ``"min:max"`` range or named port.

    A numeric string becomes an int; a range keeps its string form.
    """
    if isinstance(value, bool):
        raise ValueError("port must be a number, a 'min:max' range or a port name")
    if isinstance(value, int):
        if not 0 <= value <= 65535:
            raise ValueError(f"port {value} is out of range 0-65535")
        return value
    if not isinstance(value, str):
        raise ValueError("port must be a number, a 'min:max' range or a port name")
    if _DIGITS.fullmatch(value):
        number = _port_number(value)
        if number is None:
            raise ValueError(f"port {value} is out of range 0-65535")
        return number
    match = _PORT_RANGE.fullmatch(value)
    if match:
        low, high = _port_number(match[1]), _port_number(match[2])
        if low is None or high is None:
            raise ValueError(f"port range {value!r} is out of range 0-65535")
        if low > high:
            raise ValueError(f"port range {value!r} has min greater than max")
        return value
    problem = port_name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def port_range(value: int | str) -> tuple[int, int] | None:
    """The inclusive (min, max) of a numeric port or range; None for a named port."""
    if isinstance(value, int):
        return (value, value)
    match = _PORT_RANGE.fullmatch(value)
    if match:
        return (int(match[1]), int(match[2]))
    return None


def parse_k8s_port(value: object) -> int | str:
    """A Kubernetes int-or-string port: 1-65535, or a port name (a numeric string is not)."""
    if isinstance(value, bool):
        raise ValueError("port must be a number or a port name")
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            raise ValueError(f"port {value} is out of range 1-65535")
        return value
    if not isinstance(value, str):
        raise ValueError("port must be a number or a port name")
    problem = port_name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def parse_protocol(value: object) -> int | str:
    """A Calico protocol: a name as Calico spells it, or a number 1-255."""
    if isinstance(value, bool):
        raise ValueError("protocol must be a name or a number 1-255")
    if isinstance(value, int):
        if not 1 <= value <= 255:
            raise ValueError(f"protocol number {value} is out of range 1-255")
        return value
    if not isinstance(value, str):
        raise ValueError("protocol must be a name or a number 1-255")
    if _DIGITS.fullmatch(value):
        digits = value.lstrip("0") or "0"
        if len(digits) > 3 or not 1 <= int(digits) <= 255:
            raise ValueError(f"protocol number {value} is out of range 1-255")
        return int(digits)
    if value in PROTOCOL_NUMBERS:
        return value
    names = ", ".join(PROTOCOL_NUMBERS)
    raise ValueError(f"unknown protocol {value!r} (expected one of {names}, case as shown)")


def protocol_number(protocol: int | str) -> int:
    """The IP protocol number of a validated Calico protocol."""
    if isinstance(protocol, int):
        return protocol
    return PROTOCOL_NUMBERS[protocol]


# ------------------------------------------------------------------------ selectors


def _parse_selector(text: str) -> None:
    if text == "":
        return
    try:
        # Imported late: the model package must import (and validate everything else)
        # even where the selector package is not available.
        from palisade.selector import SelectorError, parse
    except ImportError:
        return
    try:
        parse(text)
    except SelectorError as err:
        position = getattr(err, "position", None)
        reason = getattr(err, "reason", str(err))
        where = f" at position {position}" if position is not None else ""
        raise ValueError(f"invalid selector{where}: {reason}") from None
    except Exception as err:  # a parser bug must still come out as a problem, not a crash
        raise ValueError(f"selector could not be parsed ({type(err).__name__}: {err})") from None


def check_selector(text: str) -> str:
    """A selector field where ``global()`` is not allowed (spec 1.10)."""
    if len(text) > MAX_SELECTOR_LENGTH:
        raise ValueError(f"selector is longer than {MAX_SELECTOR_LENGTH} characters")
    if "global(" in text:
        raise ValueError("global() is only allowed as the whole of a rule's namespaceSelector")
    _parse_selector(text)
    return text


def check_rule_namespace_selector(text: str) -> str:
    """An EntityRule namespaceSelector: ``global()`` allowed, but only on its own."""
    if len(text) > MAX_SELECTOR_LENGTH:
        raise ValueError(f"selector is longer than {MAX_SELECTOR_LENGTH} characters")
    if "global(" in text and not _GLOBAL_ONLY.fullmatch(text):
        raise ValueError("global() must be the whole namespaceSelector when it is used")
    _parse_selector(text)
    return text


def check_port_name(text: str) -> str:
    problem = port_name_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def check_domain(text: str) -> str:
    problem = domain_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def check_prefix_wildcard_domain(text: str) -> str:
    problem = prefix_wildcard_domain_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def check_dns_label(text: str) -> str:
    problem = dns_label_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def check_label_key(text: str) -> str:
    problem = label_key_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def check_label_value(text: str) -> str:
    problem = label_value_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


# Annotated types used by the models.
Selector = Annotated[str, AfterValidator(check_selector)]
RuleNamespaceSelector = Annotated[str, AfterValidator(check_rule_namespace_selector)]
CalicoNet = Annotated[str, AfterValidator(check_calico_net)]
CIDR = Annotated[str, AfterValidator(check_cidr)]
IPAddress = Annotated[str, AfterValidator(check_ip)]
CalicoPort = Annotated[int | str, BeforeValidator(parse_calico_port)]
K8sPort = Annotated[int | str, BeforeValidator(parse_k8s_port)]
Protocol = Annotated[int | str, BeforeValidator(parse_protocol)]
PortName = Annotated[str, AfterValidator(check_port_name)]
Domain = Annotated[str, AfterValidator(check_domain)]
PrefixWildcardDomain = Annotated[str, AfterValidator(check_prefix_wildcard_domain)]
DNSLabel = Annotated[str, AfterValidator(check_dns_label)]
LabelKey = Annotated[str, AfterValidator(check_label_key)]
LabelValue = Annotated[str, AfterValidator(check_label_value)]
