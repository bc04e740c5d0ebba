"""The plugin's commands against the kernel (netlink driver) and the datastore.

Every command runs in the caller's network namespace, which is the node's: the host end of
each veth, its /32 route and neighbour entry live there; the pod end is created directly in
the pod's namespace (``CNI_NETNS``). Per pod:

- node: ``<workload_interface_name(ns, pod)>`` (veth, up, proxy ARP on), a neighbour entry
  pod IP → pod MAC and a route ``<pod IP>/32 dev <veth> proto 154``;
- pod: ``CNI_IFNAME`` with ``<pod IP>/32``, a link route to 169.254.1.1, a permanent
  neighbour entry 169.254.1.1 → the host end's MAC, and ``default via 169.254.1.1 onlink``.

An ADD remembers an undo step for everything it changes and, if any later step fails, runs
them in reverse, so a failed ADD leaves no interface, address, route or record behind.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from palisade.dataplane.ipam import (
    HandleInUse,
    IpamError,
    PoolExhausted,
    StoreAllocator,
    eligible_pools,
    lock_path_for,
)
from palisade.dataplane.ipam._core import POOL_KIND, Pool
from palisade.dataplane.linux import (
    Neighbour,
    Netlink,
    NetlinkError,
    Route,
    netns_exists,
)
from palisade.datastore import DatastoreError, DatastoreUnavailable, Store, open_store
from palisade.naming import workload_interface_name

from ._endpoint import endpoint_container, endpoint_ips, record_endpoint, remove_endpoint
from ._protocol import (
    GATEWAY_V4,
    LATEST_VERSION,
    SUPPORTED_VERSIONS,
    Attachment,
    CniError,
    ErrorCode,
    NetConf,
    Request,
    check_command_version,
    default_node,
    parse_command,
    parse_config,
    parse_request,
    render_result,
    version_report,
)

GATEWAY = ipaddress.IPv4Address(GATEWAY_V4)
DEFAULT_V4 = ipaddress.IPv4Network("0.0.0.0/0")


def _allocator(conf: NetConf, store: Store) -> StoreAllocator:
    return StoreAllocator(store, conf.nodename, lock_path=lock_path_for(conf.datastore))


def _pod_of(request: Request) -> tuple[str, str]:
    pod = request.pod
    if pod is None:
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            "CNI_ARGS must name the pod: K8S_POD_NAMESPACE=...;K8S_POD_NAME=...",
        )
    return pod


def _existing_netns(request: Request) -> str:
    name = request.netns_name
    assert name is not None  # parse_request demands CNI_NETNS for ADD and CHECK
    if not netns_exists(name):
        raise CniError(
            ErrorCode.UNKNOWN_CONTAINER, f"network namespace {request.netns_path} does not exist"
        )
    return name


# -- ADD ---------------------------------------------------------------------------------------


def add(conf: NetConf, request: Request, store: Store) -> dict[str, Any]:
    namespace, pod = _pod_of(request)
    netns = _existing_netns(request)
    host_if = workload_interface_name(namespace, pod)
    ipam = _allocator(conf, store)
    # A duplicate ADD must fail before touching anything: the rollback below would otherwise
    # tear down the attachment that is already there.
    if ipam.assignments(request.handle):
        raise CniError(
            ErrorCode.ALREADY_ATTACHED,
            f"container {request.container_id} interface {request.ifname} is already attached",
            "duplicate ADD: call DEL first",
        )
    with Netlink() as host:
        if host.find_link(host_if) is not None:
            raise CniError(
                ErrorCode.ALREADY_ATTACHED,
                f"pod {namespace}/{pod} already has its host interface {host_if}",
                "duplicate ADD, or a previous sandbox of this pod was not deleted",
            )
    with Netlink(netns) as pod_side:
        if pod_side.find_link(request.ifname) is not None:
            raise CniError(
                ErrorCode.ALREADY_ATTACHED,
                f"interface {request.ifname} already exists in {request.netns_path}",
            )

    undo: list[Callable[[], object]] = []
    try:
        assignment = ipam.assign(
            request.handle,
            {"namespace": namespace, "pod": pod, "containerID": request.container_id},
        )
        undo.append(lambda: ipam.release(request.handle))
        with Netlink() as host:
            host.create_veth(host_if, request.ifname, peer_netns=netns)
            undo.append(lambda: _delete_host_link(host_if))
            host.set_mtu(host_if, conf.mtu)
            host.set_sysctl(f"net/ipv4/conf/{host_if}/proxy_arp", 1)
            host.set_sysctl(f"net/ipv4/neigh/{host_if}/proxy_delay", 0)
            host.set_up(host_if)
            host_link = host.link(host_if)
        with Netlink(netns) as pod_side:
            pod_side.set_mtu(request.ifname, conf.mtu)
            pod_side.set_up(request.ifname)
            pod_side.add_address(request.ifname, assignment.interface)
            pod_side.add_route(Route(ipaddress.ip_network(f"{GATEWAY}/32"), None, request.ifname))
            pod_side.add_neighbour(Neighbour(GATEWAY, str(host_link.mac), request.ifname))
            pod_side.add_route(Route(DEFAULT_V4, GATEWAY, request.ifname, onlink=True))
            pod_link = pod_side.link(request.ifname)
        with Netlink() as host:
            host.add_neighbour(Neighbour(assignment.ip, str(pod_link.mac), host_if))
            host_route = Route(ipaddress.ip_network(f"{assignment.ip}/32"), None, host_if)
            host.replace_route(host_route)
        undo.append(
            record_endpoint(
                store,
                namespace,
                pod,
                conf.nodename,
                request.container_id,
                host_if,
                [assignment.ip],
            )
        )
    except BaseException:
        _roll_back(undo)
        raise
    return render_result(
        conf.cni_version,
        Attachment(
            host_ifname=host_if,
            host_mac=str(host_link.mac),
            container_ifname=request.ifname,
            container_mac=str(pod_link.mac),
            sandbox=str(request.netns_path),
            addresses=(assignment.interface,),
        ),
    )


def _delete_host_link(name: str) -> bool:
    with Netlink() as host:
        return host.delete_link(name)  # the pod end, routes and neighbours go with it


def _roll_back(undo: list[Callable[[], object]]) -> None:
    for step in reversed(undo):
        try:
            step()
        except Exception as exc:  # keep undoing; the original error is what the caller sees
            print(f"palisade-cni: rollback step failed: {exc}", file=sys.stderr)


# -- DEL ---------------------------------------------------------------------------------------


def delete(conf: NetConf, request: Request, store: Store) -> None:
    """Undo an ADD; every part is idempotent, and a missing namespace is no error."""
    ipam = _allocator(conf, store)
    attributes = ipam.attributes(request.handle) or {}
    pod = request.pod
    if pod is None and attributes.get("namespace") and attributes.get("pod"):
        pod = (attributes["namespace"], attributes["pod"])
    held = bool(ipam.assignments(request.handle))
    if pod is not None:
        # The host interface is named per pod, not per sandbox: delete it only if it is this
        # container's (it holds this handle's address, or the record names this container).
        mine = held or endpoint_container(store, *pod) == request.container_id
        if mine:
            _delete_host_link(workload_interface_name(*pod))
            remove_endpoint(store, pod[0], pod[1], request.container_id)
    ipam.release(request.handle)


# -- CHECK -------------------------------------------------------------------------------------


def check(conf: NetConf, request: Request, store: Store) -> None:
    namespace, pod = _pod_of(request)
    netns = _existing_netns(request)
    host_if = workload_interface_name(namespace, pod)
    problems: list[str] = []
    assignments = _allocator(conf, store).assignments(request.handle)
    if not assignments:
        problems.append(f"IPAM holds no address for {request.handle}")
    with Netlink() as host:
        host_link = host.find_link(host_if)
        if host_link is None or not host_link.up:
            problems.append(f"host interface {host_if} is missing or down")
        host_routes = set(host.routes(dev=host_if)) if host_link is not None else set()
    with Netlink(netns) as pod_side:
        pod_link = pod_side.find_link(request.ifname)
        if pod_link is None or not pod_link.up:
            problems.append(
                f"interface {request.ifname} in {request.netns_path} is missing or down"
            )
            pod_addresses: set[str] = set()
            pod_routes: list[Route] = []
        else:
            pod_addresses = {str(a.interface) for a in pod_side.addresses(request.ifname)}
            pod_routes = pod_side.routes(dev=request.ifname)
    if not any(r.dst == DEFAULT_V4 and r.gateway == GATEWAY for r in pod_routes):
        problems.append(f"no default route via {GATEWAY} in {request.netns_path}")
    for assignment in assignments:
        if str(assignment.interface) not in pod_addresses:
            problems.append(f"address {assignment.interface} is not on {request.ifname}")
        wanted = Route(assignment.interface.network, None, host_if)
        if wanted not in host_routes:
            problems.append(f"no route {assignment.interface.network} dev {host_if} on the node")
    recorded = endpoint_ips(store, namespace, pod)
    if sorted(recorded) != sorted(str(a.ip) for a in assignments):
        problems.append(f"Pod {namespace}/{pod} records addresses {recorded}")
    if conf.prev_result is not None:
        previous = {str(ip.get("address")) for ip in conf.prev_result.get("ips") or ()}
        if previous != {str(a.interface) for a in assignments}:
            problems.append(f"prevResult addresses {sorted(previous)} differ from IPAM's")
    if problems:
        raise CniError(ErrorCode.CHECK_FAILED, "; ".join(problems))


# -- GC and STATUS (CNI 1.1) ------------------------------------------------------------------


def garbage_collect(conf: NetConf, store: Store) -> None:
    """Remove this node's attachments that are not in ``cni.dev/valid-attachments``."""
    valid_list = conf.raw.get("cni.dev/valid-attachments") or []
    if not isinstance(valid_list, list):
        raise CniError(ErrorCode.INVALID_CONFIG, "cni.dev/valid-attachments must be a list")
    valid = {
        f"{item.get('containerID')}.{item.get('ifname')}"
        for item in valid_list
        if isinstance(item, dict)
    }
    for handle, attributes in _allocator(conf, store).node_handles().items():
        if handle in valid or "containerID" not in attributes:
            continue
        container_id = attributes["containerID"]
        ifname = handle.removeprefix(f"{container_id}.")
        stale = Request("DEL", container_id, None, ifname, {}, "")
        delete(conf, stale, store)


def status(conf: NetConf, store: Store) -> None:
    ipam = _allocator(conf, store)
    pools = [Pool.from_document(r.value) for r in store.list(POOL_KIND)]
    if not eligible_pools(pools, ipam.node_labels(), 4):
        raise CniError(
            ErrorCode.PLUGIN_NOT_AVAILABLE,
            f"no enabled IPv4 IP pool for workloads selects node {conf.nodename}",
        )


# -- entry point -------------------------------------------------------------------------------


def _declared_version(text: str) -> str:
    """The configuration's cniVersion if it is one we speak, for error and VERSION output."""
    try:
        version = json.loads(text).get("cniVersion")
    except (ValueError, AttributeError):
        return LATEST_VERSION
    return version if version in SUPPORTED_VERSIONS else LATEST_VERSION


def _dispatch(command: str, text: str, environ: Mapping[str, str]) -> dict[str, Any] | None:
    if command == "VERSION":
        return version_report(_declared_version(text))
    conf = parse_config(text, default_node())
    check_command_version(command, conf.cni_version)
    request = None if command in ("GC", "STATUS") else parse_request(command, environ)
    try:
        store = open_store(conf.datastore)
    except DatastoreUnavailable:
        raise  # unreachable, not misconfigured: "try again later" (see _as_cni_error)
    except DatastoreError as exc:
        raise CniError(ErrorCode.INVALID_CONFIG, f"datastore: {exc}") from None
    with store:
        if command == "ADD":
            assert request is not None
            return add(conf, request, store)
        if command == "DEL":
            assert request is not None
            delete(conf, request, store)
        elif command == "CHECK":
            assert request is not None
            check(conf, request, store)
        elif command == "GC":
            garbage_collect(conf, store)
        else:
            status(conf, store)
    return None


def _as_cni_error(command: str, exc: Exception) -> CniError:
    if isinstance(exc, CniError):
        return exc
    if isinstance(exc, HandleInUse):  # a concurrent duplicate ADD got there first
        return CniError(ErrorCode.ALREADY_ATTACHED, "already attached", str(exc))
    if isinstance(exc, PoolExhausted):
        return CniError(ErrorCode.ADDRESS_EXHAUSTED, "no free address", str(exc))
    if isinstance(exc, DatastoreUnavailable):
        code = ErrorCode.PLUGIN_NOT_AVAILABLE if command == "STATUS" else ErrorCode.TRY_AGAIN_LATER
        return CniError(code, "datastore unavailable", str(exc))
    if isinstance(exc, NetlinkError):
        if exc.errno == errno.ENOENT and "netns" in exc.target:
            return CniError(ErrorCode.UNKNOWN_CONTAINER, "network namespace is gone", str(exc))
        return CniError(ErrorCode.IO_FAILURE, f"{exc.operation} failed", str(exc))
    if isinstance(exc, IpamError | DatastoreError):
        return CniError(ErrorCode.DATASTORE_FAILURE, "IPAM failed", str(exc))
    return CniError(ErrorCode.IO_FAILURE, f"{type(exc).__name__}", str(exc))


def run(stdin: str, environ: Mapping[str, str], stdout: TextIO) -> int:
    """One plugin invocation; returns the exit status (0, or 1 with an error object printed)."""
    command = environ.get("CNI_COMMAND", "")
    try:
        command = parse_command(environ)
        output = _dispatch(command, stdin, environ)
    except Exception as exc:
        error = _as_cni_error(command, exc)
        json.dump(error.to_json(_declared_version(stdin)), stdout)
        stdout.write("\n")
        return 1
    if output is not None:
        json.dump(output, stdout, indent=2)
        stdout.write("\n")
    return 0
