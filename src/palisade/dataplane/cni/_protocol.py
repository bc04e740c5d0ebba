"""The CNI protocol, sans-I/O: configuration and environment in, result and error JSON out.

Follows the CNI specification 1.0 (and 1.1 for GC and STATUS): the runtime passes the network
configuration as JSON on stdin and the request in ``CNI_*`` environment variables; the plugin
prints a result (ADD), a version report (VERSION) or nothing (DEL, CHECK, GC, STATUS) on
stdout and exits 0, or prints an error object and exits non-zero.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = "1.0.0"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
#: Commands by the first version that has them; a request under an older version is refused.
FIRST_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
NETNS_DIRS = ("/var/run/netns", "/run/netns")

#: The gateway every pod routes through: link-local, answered by the host veth (as Calico).
GATEWAY_V4 = "169.254.1.1"


class ErrorCode(IntEnum):
    """The specification's error codes, then Palisade's own (100 and up)."""

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT = 4
    IO_FAILURE = 5
    DECODING_FAILURE = 6
    INVALID_CONFIG = 7
    TRY_AGAIN_LATER = 11
    PLUGIN_NOT_AVAILABLE = 50
    ALREADY_ATTACHED = 100
    ADDRESS_EXHAUSTED = 101
    CHECK_FAILED = 102
    DATASTORE_FAILURE = 103


class CniError(Exception):
    """What the plugin prints as the error object, and exits non-zero with."""

    def __init__(self, code: ErrorCode, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        error: dict[str, Any] = {"cniVersion": cni_version, "code": int(self.code), "msg": self.msg}
        if self.details:
            error["details"] = self.details
        return error


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True, slots=True)
class NetConf:
    """The network configuration: the spec's fields plus Palisade's.

    ``datastore`` is a datastore URL (``sqlite:////abs/path.db``, ``etcd://host:port``);
    ``nodename`` the node this plugin runs on (default: the host name); ``mtu`` the MTU of
    both veth ends (default 1500).
    """

    cni_version: str
    name: str
    type: str
    datastore: str
    nodename: str
    mtu: int
    prev_result: Mapping[str, Any] | None
    raw: Mapping[str, Any] = field(repr=False)


def parse_config(text: str, default_node: str) -> NetConf:
    """Read the configuration from stdin's text; CniError with the spec's code if it is bad."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise CniError(
            ErrorCode.DECODING_FAILURE, "network configuration is not JSON", str(exc)
        ) from None
    if not isinstance(raw, dict):
        raise CniError(ErrorCode.DECODING_FAILURE, "network configuration is not a JSON object")
    version = raw.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise CniError(ErrorCode.INVALID_CONFIG, "network configuration has no cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            ErrorCode.INCOMPATIBLE_VERSION,
            f"incompatible CNI version {version}",
            f"supported: {', '.join(SUPPORTED_VERSIONS)}",
        )
    for required in ("name", "type", "datastore"):
        if not isinstance(raw.get(required), str) or not raw[required]:
            raise CniError(
                ErrorCode.INVALID_CONFIG, f"network configuration needs a string {required!r}"
            )
    mtu = raw.get("mtu", 1500)
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535:
        raise CniError(ErrorCode.INVALID_CONFIG, f"mtu must be an integer 68-65535, got {mtu!r}")
    node = raw.get("nodename", default_node)
    if not isinstance(node, str) or not node:
        raise CniError(ErrorCode.INVALID_CONFIG, "nodename must be a non-empty string")
    ipam = raw.get("ipam")
    if ipam is not None and (
        not isinstance(ipam, dict) or ipam.get("type", "palisade-ipam") != "palisade-ipam"
    ):
        raise CniError(
            ErrorCode.UNSUPPORTED_FIELD,
            "ipam: only the built-in palisade-ipam is supported",
            'omit \'ipam\' or set it to {"type": "palisade-ipam"}',
        )
    prev = raw.get("prevResult")
    return NetConf(
        cni_version=version,
        name=raw["name"],
        type=raw["type"],
        datastore=raw["datastore"],
        nodename=node,
        mtu=mtu,
        prev_result=prev if isinstance(prev, dict) else None,
        raw=raw,
    )


@dataclass(frozen=True, slots=True)
class Request:
    """The ``CNI_*`` environment of one invocation."""

    command: str
    container_id: str
    netns_path: str | None
    ifname: str
    args: Mapping[str, str]
    path: str

    @property
    def handle(self) -> str:
        """The IPAM handle of this attachment: container id and interface name."""
        return f"{self.container_id}.{self.ifname}"

    @property
    def netns_name(self) -> str | None:
        """The named namespace ``CNI_NETNS`` points at (``/var/run/netns/NAME``)."""
        if self.netns_path is None:
            return None
        directory, _, name = self.netns_path.rstrip("/").rpartition("/")
        if directory not in NETNS_DIRS or not name:
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT,
                f"CNI_NETNS {self.netns_path!r} is not a named network namespace",
                f"this plugin takes paths under {' or '.join(NETNS_DIRS)}",
            )
        return name

    @property
    def pod(self) -> tuple[str, str] | None:
        namespace, name = self.args.get("K8S_POD_NAMESPACE"), self.args.get("K8S_POD_NAME")
        return (namespace, name) if namespace and name else None


def parse_command(environ: Mapping[str, str]) -> str:
    command = environ.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            f"unknown CNI_COMMAND {command!r}" if command else "CNI_COMMAND is not set",
            f"expected one of {', '.join(COMMANDS)}",
        )
    return command


def check_command_version(command: str, version: str) -> None:
    first = FIRST_VERSION.get(command)
    if first is not None and _version_key(version) < _version_key(first):
        raise CniError(
            ErrorCode.INCOMPATIBLE_VERSION,
            f"{command} needs cniVersion {first} or later, the configuration has {version}",
        )


def parse_request(command: str, environ: Mapping[str, str]) -> Request:
    """Read and check the environment an ADD, DEL or CHECK needs."""

    def need(name: str) -> str:
        value = environ.get(name, "")
        if not value:
            raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"{name} is not set")
        return value

    container_id = need("CNI_CONTAINERID")
    ifname = need("CNI_IFNAME")
    if len(ifname) > 15 or "/" in ifname or any(c.isspace() for c in ifname):
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"CNI_IFNAME {ifname!r} is no interface name")
    netns = environ.get("CNI_NETNS") or None
    if command in ("ADD", "CHECK") and netns is None:
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, "CNI_NETNS is not set")
    args: dict[str, str] = {}
    for pair in filter(None, environ.get("CNI_ARGS", "").split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"CNI_ARGS: malformed pair {pair!r}")
        args[key] = value
    return Request(command, container_id, netns, ifname, args, environ.get("CNI_PATH", ""))


def version_report(cni_version: str) -> dict[str, Any]:
    return {"cniVersion": cni_version, "supportedVersions": list(SUPPORTED_VERSIONS)}


@dataclass(frozen=True, slots=True)
class Attachment:
    """What an ADD made, as the result reports it."""

    host_ifname: str
    host_mac: str
    container_ifname: str
    container_mac: str
    sandbox: str
    addresses: tuple[IPv4Interface | IPv6Interface, ...]
    gateway_v4: str = GATEWAY_V4


def render_result(cni_version: str, attachment: Attachment) -> dict[str, Any]:
    """The ADD result in the configuration's version (0.3.x and 0.4.0 add ``version``)."""
    old = _version_key(cni_version) < (1, 0, 0)
    ips: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    for address in attachment.addresses:
        ip: dict[str, Any] = {"address": str(address), "interface": 1}
        if address.version == 4:
            ip["gateway"] = attachment.gateway_v4
            routes.append({"dst": "0.0.0.0/0", "gw": attachment.gateway_v4})
        if old:
            ip = {"version": str(address.version), **ip}
        ips.append(ip)
    return {
        "cniVersion": cni_version,
        "interfaces": [
            {"name": attachment.host_ifname, "mac": attachment.host_mac},
            {
                "name": attachment.container_ifname,
                "mac": attachment.container_mac,
                "sandbox": attachment.sandbox,
            },
        ],
        "ips": ips,
        "routes": routes,
        "dns": {},
    }


def default_node() -> str:
    return os.uname().nodename
