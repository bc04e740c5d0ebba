"""Bringing a lab up, probing it, and taking it down again."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from ipaddress import ip_interface
from pathlib import Path
from typing import Any

from palisade.calc import (
    TUNNEL_ADDRESS_ANNOTATION,
    UNDERLAY_ANNOTATION,
    VXLAN_MAC_ANNOTATION,
)
from palisade.dataplane.ipam import StoreAllocator, lock_path_for
from palisade.dataplane.linux import (
    Netlink,
    NetlinkError,
    create_netns,
    delete_netns,
    list_netns,
    netns_exists,
)
from palisade.datastore import Store, open_store
from palisade.model import load_paths
from palisade.resources import apply_documents

from ._state import LabState, PodRecord, ProcessRecord

DEFAULT_STATE_DIR = Path(os.environ.get("PALISADE_LAB_DIR", "/run/palisade/lab"))
"""Where ``lab up`` keeps its state unless told otherwise (``$PALISADE_LAB_DIR``)."""
DEFAULT_POOL: dict[str, Any] = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "IPPool",
    "metadata": {"name": "pal-lab-pool"},
    "spec": {"cidr": "10.244.0.0/16", "blockSize": 26, "vxlanMode": "Always"},
}
POD_INTERFACE = "eth0"
TRAFFIC_ANNOTATION = "lab.palisade.io/traffic"
INTERVAL_ANNOTATION = "lab.palisade.io/traffic-interval"
#: TCP ports (numbers or names, separated by spaces or commas) to put a WAF proxy in front of:
#: ``palisade waf proxy`` runs in the pod's namespace and an nftables redirect there sends the
#: port's inbound connections through it, so clients still connect to POD_IP:PORT.
WAF_ANNOTATION = "lab.palisade.io/waf"
WAF_PROXY_PORT = 15080  # the proxy of the i-th protected port listens on WAF_PROXY_PORT + i
MAX_NODES = 64
UNDERLAY_PREFIX = "192.168.77."  # node i has 192.168.77.<i+1>/24 on its ``ul0``
UNDERLAY_BRIDGE = "br0"
UNDERLAY_INTERFACE = "ul0"
VXLAN_MAC_BASE = "66:70:61:6c:00:"  # locally administered; node i ends in <i+1>
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "ReplicaSet", "DaemonSet"})
IP = shutil.which("ip") or "/usr/sbin/ip"
NFT = shutil.which("nft") or "/usr/sbin/nft"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PARALLEL_PODS = 4
PARALLEL_PROBES = 8
SETTLE = 0.3  # seconds; see wait_programmed
AGENT_GRACE = 3.0  # seconds an agent has to stop on SIGTERM before SIGKILL
# Run as scripts, not ``-m``: importing the package would load the whole of Palisade.
PROBE_COMMAND = (sys.executable, str(Path(__file__).with_name("_probe.py")))
SERVER_COMMAND = (sys.executable, str(Path(__file__).with_name("_server.py")))
CLIENT_COMMAND = (sys.executable, str(Path(__file__).with_name("_client.py")))


class LabError(RuntimeError):
    """Something the lab could not do; the message says what and where."""


# -- names and documents ------------------------------------------------------------------------


def lab_prefix(lab_id: str) -> str:
    """The prefix of every namespace of lab ``lab_id``: ``pal-l<id>-``."""
    return f"pal-l{lab_id}-"


def check_lab_id(lab_id: str) -> None:
    if not (1 <= len(lab_id) <= 8 and lab_id.isascii() and lab_id.isalnum()):
        raise LabError(f"lab id {lab_id!r}: 1-8 letters or digits")


def node_name(index: int) -> str:
    return f"node-{index}"


def underlay_address(index: int) -> str:
    return f"{UNDERLAY_PREFIX}{index + 1}"


def node_document(index: int, tunnel_ip: str | None = None) -> dict[str, Any]:
    """Node ``node-<index>`` as the agents read it: underlay address, VXLAN tunnel address
    (once IPAM gave one) and the MAC its VXLAN device is to have."""
    annotations = {
        UNDERLAY_ANNOTATION: f"{underlay_address(index)}/24",
        VXLAN_MAC_ANNOTATION: f"{VXLAN_MAC_BASE}{index + 1:02x}",
    }
    if tunnel_ip is not None:
        annotations[TUNNEL_ADDRESS_ANNOTATION] = tunnel_ip
    name = node_name(index)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
            "annotations": annotations,
        },
    }


def _vxlan_pool(documents: Sequence[Mapping[str, Any]]) -> bool:
    return any(
        d.get("kind") == "IPPool"
        and (d.get("spec") or {}).get("vxlanMode") in ("Always", "CrossSubnet")
        for d in documents
    )


def load_manifests(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Validated documents from files and directories; :class:`LabError` lists the problems."""
    result = load_paths(list(paths))
    if result.problems:
        raise LabError("invalid manifests:\n" + "\n".join(str(p) for p in result.problems))
    return [resource.to_document() for resource in result.resources]


def _labels(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}


def expand_pods(documents: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The pods of ``documents``: each Pod, and ``<name>-<i>`` per replica of each workload
    (Deployment, StatefulSet, ReplicaSet; a DaemonSet: one) whose pods the documents do not
    already hold — the names and labels ``palisade.policy.Cluster`` gives them, so the
    engine's matrix and the lab's name the same pods. Host-network pods and finished pods are
    left out, as the engine leaves them out."""
    pods = [dict(d) for d in documents if d.get("kind") == "Pod"]
    existing = [
        (str((p.get("metadata") or {}).get("namespace") or "default"), p.get("metadata") or {})
        for p in pods
    ]
    for document in documents:
        if document.get("kind") not in WORKLOAD_KINDS:
            continue
        meta = document.get("metadata") or {}
        spec = document.get("spec") or {}
        namespace = str(meta.get("namespace") or "default")
        template = spec.get("template") or {}
        labels = _labels((template.get("metadata") or {}).get("labels"))
        selector = _labels((spec.get("selector") or {}).get("matchLabels")) or labels
        if any(
            ns == namespace
            and all(_labels(m.get("labels")).get(k) == v for k, v in selector.items())
            for ns, m in existing
        ):
            continue
        replicas = 1 if document.get("kind") == "DaemonSet" else spec.get("replicas", 1)
        for index in range(int(replicas if replicas is not None else 1)):
            pods.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{meta.get('name')}-{index}",
                        "namespace": namespace,
                        "labels": labels,
                        "annotations": dict(
                            (template.get("metadata") or {}).get("annotations") or {}
                        ),
                        "generateName": f"{meta.get('name')}-",
                    },
                    "spec": json.loads(json.dumps(template.get("spec") or {})),
                }
            )
    return [
        p
        for p in pods
        if not (p.get("spec") or {}).get("hostNetwork")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


def container_ports(pod: Mapping[str, Any], *, served: bool = False) -> list[dict[str, Any]]:
    """``{name, port, protocol}`` for each TCP or UDP container port the pod declares (with
    ``served``: only those of containers without a command, which the echo server serves)."""
    ports: list[dict[str, Any]] = []
    for container in (pod.get("spec") or {}).get("containers") or ():
        if served and container.get("command"):
            continue
        for port in container.get("ports") or ():
            protocol = str(port.get("protocol") or "TCP").upper()
            if protocol in ("TCP", "UDP") and port.get("containerPort"):
                entry = {"port": int(port["containerPort"]), "protocol": protocol}
                entry["name"] = str(port["name"]) if port.get("name") else None
                if entry not in ports:
                    ports.append(entry)
    return ports


def container_commands(pod: Mapping[str, Any]) -> list[list[str]]:
    """``command`` + ``args`` of each container that gives a command (run instead of the
    echo server on that container's ports)."""
    return [
        [str(a) for a in [*container["command"], *(container.get("args") or ())]]
        for container in (pod.get("spec") or {}).get("containers") or ()
        if container.get("command")
    ]


def pod_traffic(pod: Mapping[str, Any]) -> tuple[list[str], float]:
    """The targets of the pod's client loop (annotation :data:`TRAFFIC_ANNOTATION`, separated
    by spaces or commas) and its interval in seconds (:data:`INTERVAL_ANNOTATION`, default 1)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    targets = str(annotations.get(TRAFFIC_ANNOTATION) or "").replace(",", " ").split()
    text = str(annotations.get(INTERVAL_ANNOTATION) or "1")
    try:
        interval = float(text)
    except ValueError:
        interval = -1.0
    if not 0.05 <= interval <= 3600:
        raise LabError(f"pod {pod_key(pod)}: {INTERVAL_ANNOTATION} {text!r}: 0.05 to 3600 seconds")
    return targets, interval


def resolve_traffic(state: LabState, source: str) -> list[dict[str, Any]]:
    """The client targets of pod ``source``: ``NS/NAME:PORT[/PROTO]`` names a pod, or every pod
    ``NAME-<i>`` of a workload; PORT is a number or a port name the target pod declares."""
    found: list[dict[str, Any]] = []
    for target in state.pods[source].traffic:
        where, _, port_spec = target.rpartition(":")
        port_text, _, protocol = port_spec.partition("/")
        protocol = (protocol or "TCP").upper()
        if "/" not in where or not port_text or protocol not in ("TCP", "UDP", "HTTP"):
            raise LabError(
                f"pod {source}: {TRAFFIC_ANNOTATION}: {target!r}: "
                "expected NS/NAME:PORT[/TCP|/UDP|/HTTP]"
            )
        pods = [
            key
            for key in sorted(state.pods)
            if key == where or (key.startswith(where + "-") and key[len(where) + 1 :].isdigit())
        ]
        if not pods:
            raise LabError(
                f"pod {source}: {TRAFFIC_ANNOTATION}: {target!r} names no pod of the lab"
            )
        for key in pods:
            record = state.pods[key]
            transport = "TCP" if protocol == "HTTP" else protocol
            port = _resolve(record, int(port_text) if port_text.isdigit() else port_text, transport)
            if port is None:
                raise LabError(
                    f"pod {source}: {TRAFFIC_ANNOTATION}: {target!r}: {key} declares no "
                    f"{transport} port {port_text!r}"
                )
            found.append(
                {
                    "name": f"{key}:{port}/{protocol}",
                    "ip": record.ip,
                    "port": port,
                    "protocol": protocol,
                }
            )
    return found


def waf_ports(pod: Mapping[str, Any]) -> list[int]:
    """The TCP ports annotation :data:`WAF_ANNOTATION` asks to protect, resolved."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    wanted = str(annotations.get(WAF_ANNOTATION) or "").replace(",", " ").split()
    declared = [p for p in container_ports(pod) if p["protocol"] == "TCP"]
    ports: list[int] = []
    for text in wanted:
        number = next(
            (int(p["port"]) for p in declared if p["name"] == text or str(p["port"]) == text),
            None,
        )
        if number is None:
            raise LabError(f"pod {pod_key(pod)}: {WAF_ANNOTATION}: no TCP port {text!r} declared")
        if number not in ports:
            ports.append(number)
    return ports


def _waf_redirect(netns: str, ports: Sequence[int]) -> None:
    """In the pod's namespace: inbound connections to each port go to its WAF proxy."""
    rules = "".join(
        f'    iifname "{POD_INTERFACE}" tcp dport {port} redirect to :{WAF_PROXY_PORT + i}\n'
        for i, port in enumerate(ports)
    )
    script = (
        "table ip palisade_waf {\n  chain prerouting {\n"
        "    type nat hook prerouting priority dstnat; policy accept;\n"
        f"{rules}  }}\n}}\n"
    )
    completed = subprocess.run(
        [IP, "netns", "exec", netns, NFT, "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if completed.returncode != 0:
        raise LabError(f"WAF redirect in {netns}: {completed.stderr.strip()}")


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


# -- processes ---------------------------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks); None if there is no such
    process (or only its zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def _alive(record: ProcessRecord) -> bool:
    return _start_time(record.pid) == record.start_time


_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def _reap_finished() -> None:
    """Collect the exit status of every child of this process that has ended (a lab taken
    down by another process leaves them as zombies here until then)."""
    with _children_lock:
        for pid, child in list(_children.items()):
            if child.poll() is not None:
                del _children[pid]


atexit.register(_reap_finished)


def _reap(pid: int) -> None:
    with _children_lock:
        child = _children.pop(pid, None)
    if child is not None:
        if child.poll() is None:
            with _children_lock:
                _children[pid] = child
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _netns_inode(name: str) -> int | None:
    try:
        return os.stat(f"/var/run/netns/{name}").st_ino
    except OSError:
        return None


def _processes_naming(arguments: Sequence[str]) -> list[int]:
    """PIDs of processes with one of ``arguments`` on their command line."""
    wanted = {a.encode() for a in arguments}
    if not wanted:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted.intersection(argv):
            found.append(int(entry))
    return found


def _processes_in(namespaces: Sequence[str]) -> list[int]:
    """PIDs of processes whose network namespace is one of ``namespaces``."""
    inodes = {i for i in (_netns_inode(n) for n in namespaces) if i is not None}
    if not inodes:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                found.append(int(entry))
        except OSError:
            continue
    return found


# -- the lab -----------------------------------------------------------------------------------


@dataclass
class _Builder:
    """One ``up``: the state, saved before each object is made, and the store."""

    state: LabState
    hook: Callable[[str], None] | None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def directory(self) -> Path:
        return Path(self.state.state_dir)

    def save(self) -> None:
        with self.lock:
            self.state.save()

    def file(self, name: str) -> Path:
        path = self.directory / name
        with self.lock:
            if str(path) not in self.state.files:
                self.state.files.append(str(path))
                self.state.save()
        return path

    def netns(self, name: str) -> None:
        with self.lock:
            self.state.netns.append(name)
            self.state.save()
        create_netns(name)
        with Netlink(name) as nl:
            nl.set_up("lo")

    def spawn(
        self,
        argv: Sequence[str],
        *,
        role: str,
        netns: str | None,
        owner: str,
        log: Path,
        ready_line: bool = False,
        ready_timeout: float = 15.0,
    ) -> ProcessRecord:
        command = [IP, "netns", "exec", netns, *argv] if netns else list(argv)
        with log.open("ab") as log_file:
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if ready_line else log_file,
                stderr=log_file,
                start_new_session=True,  # not in the terminal's group: Ctrl-C is the lab's
            )
        with _children_lock:
            _children[child.pid] = child
        record = ProcessRecord(child.pid, _start_time(child.pid) or 0, role, netns, owner)
        with self.lock:
            self.state.processes.append(record)
            self.state.save()
        if ready_line:
            assert child.stdout is not None
            readable, _, _ = select.select([child.stdout], [], [], ready_timeout)
            line = child.stdout.readline() if readable else b""
            child.stdout.close()
            if line.strip() != b"ready":
                raise LabError(f"{role} of {owner} did not start: {_tail(log)}")
        return record


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _cni_command() -> list[str]:
    script = Path(sys.executable).parent / "palisade-cni"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from palisade.dataplane.cni import main; main()"]


def cni_add(state: LabState, key: str, record: PodRecord) -> str:
    """``palisade-cni ADD`` for pod ``key`` inside its node's namespace; returns the pod IP."""
    namespace, name = key.split("/", 1)
    config = {
        "cniVersion": "1.0.0",
        "name": "palisade",
        "type": "palisade-cni",
        "datastore": state.datastore,
        "nodename": record.node,
        "mtu": 1450,
    }
    environment = {
        "PATH": SYSTEM_PATH,
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": record.netns,
        "CNI_NETNS": f"/var/run/netns/{record.netns}",
        "CNI_IFNAME": POD_INTERFACE,
        "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}",
    }
    completed = subprocess.run(
        [IP, "netns", "exec", state.nodes[record.node], *_cni_command()],
        input=json.dumps(config),
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if completed.returncode != 0:
        raise LabError(f"CNI ADD for {key} failed: {completed.stdout.strip()} {completed.stderr}")
    result = json.loads(completed.stdout)
    return str(result["ips"][0]["address"]).split("/")[0]


def _put_all(store: Store, documents: Sequence[Mapping[str, Any]]) -> None:
    if documents:
        apply_documents(store, documents)


def up(
    manifests: Sequence[Path],
    *,
    state_dir: Path = DEFAULT_STATE_DIR,
    lab_id: str = "0",
    nodes: int = 1,
    timeout: float = 60.0,
    on_pod: Callable[[str], None] | None = None,
    flows: FlowSettings | None = None,
    server: bool = False,
) -> LabState:
    """Build a lab from the manifests in ``manifests``; returns its state once every agent has
    programmed the store's latest revision.

    Each agent writes its node's flow logs to ``flows-<node>.ndjson`` in the state directory,
    and sends them to ``flows.server`` when one is given (spooled in ``spool-<node>``). With
    ``server``, the lab runs its own ``palisade server`` on a free loopback port, over the
    lab's datastore and a flow store in the state directory, and the agents report to it.

    ``on_pod`` is called with ``NS/POD`` after each pod is attached and serving (a test hook:
    raising from it stops ``up`` half-way). On failure ``up`` raises and leaves everything
    it made recorded in the state file for :func:`down`.
    """
    check_lab_id(lab_id)
    if not 1 <= nodes <= MAX_NODES:
        raise LabError(f"--nodes {nodes}: a lab has 1 to {MAX_NODES} nodes")
    documents = load_manifests(manifests)
    pools = [d for d in documents if d.get("kind") == "IPPool"]
    if nodes > 1 and pools and not _vxlan_pool(pools):
        raise LabError(
            "pods on different nodes talk over VXLAN: with --nodes > 1, give an IPPool "
            "vxlanMode: Always (or leave the IPPool out to get the lab's default)"
        )
    state_dir = Path(state_dir).absolute()
    if LabState.load(state_dir) is not None:
        raise LabError(f"a lab is already recorded in {state_dir}: run `palisade lab down` first")
    state_dir.mkdir(parents=True, exist_ok=True)
    prefix = lab_prefix(lab_id)
    leftovers = list_netns(prefix)
    if leftovers:
        raise LabError(f"namespaces of lab {lab_id!r} exist already: {', '.join(leftovers)}")
    state = LabState(lab_id, str(state_dir), f"sqlite:///{state_dir / 'store.db'}")
    builder = _Builder(state, on_pod)
    builder.save()

    node_names = [node_name(i) for i in range(nodes)]
    pods = expand_pods(documents)
    for index, pod in enumerate(pods):
        spec = pod.setdefault("spec", {})
        # A manifest may pin a pod to one of the lab's nodes; the others are spread round-robin.
        node = spec.get("nodeName")
        if node not in node_names:
            node = node_names[index % len(node_names)]
        spec["nodeName"] = node
        pod.pop("status", None)
        traffic, interval = pod_traffic(pod)
        for command in container_commands(pod):
            if shutil.which(command[0]) is None:
                raise LabError(f"pod {pod_key(pod)}: command {command[0]!r} is not on this machine")
        state.pods[pod_key(pod)] = PodRecord(
            f"{prefix}p{index}",
            node,
            None,
            container_ports(pod),
            container_commands(pod),
            traffic,
            interval,
            waf_ports(pod),
        )
    for node in node_names:
        state.nodes[node] = f"{prefix}{node}"
    builder.file("store.db")
    for suffix in ("-wal", "-shm", ".ipam.lock"):
        builder.file(f"store.db{suffix}")
    builder.save()

    stored = [d for d in documents if d.get("kind") not in ("Pod", "Node")]
    # A pod's namespace exists in a cluster (``default`` always does); manifests often leave it
    # out, and a pod of an unknown namespace would be denied everything (the agents fail
    # closed, and the engine would not), so the lab creates the namespaces its pods use.
    declared = {
        (d.get("metadata") or {}).get("name") for d in documents if d.get("kind") == "Namespace"
    }
    for namespace in sorted({key.split("/", 1)[0] for key in state.pods} - declared):
        stored.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    # Likewise a pod's service account (Kubernetes refuses a pod whose account is missing).
    accounts = {
        (str((d.get("metadata") or {}).get("namespace") or "default"), d["metadata"]["name"])
        for d in documents
        if d.get("kind") == "ServiceAccount"
    }
    for pod in pods:
        spec = pod.get("spec") or {}
        account = spec.get("serviceAccountName") or spec.get("serviceAccount")
        where = (pod_key(pod).split("/", 1)[0], str(account))
        if account and account != "default" and where not in accounts:
            accounts.add(where)
            stored.append(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": where[1], "namespace": where[0]},
                }
            )
    if not any(d.get("kind") == "IPPool" for d in documents):
        stored.append(DEFAULT_POOL)
    with open_store(state.datastore) as store:
        _put_all(store, [*stored, *pods, *(node_document(i) for i in range(nodes))])
        # Each node's VXLAN tunnel address comes from the pool, as calico-node takes it, and
        # claims the node's first block: the block other nodes route to it.
        tunnels = []
        for index, node in enumerate(node_names):
            allocator = StoreAllocator(store, node, lock_path=lock_path_for(state.datastore))
            assignment = allocator.assign(
                f"vxlan-tunnel-addr-{node}", {"type": "vxlanTunnelAddress"}
            )
            tunnels.append(node_document(index, str(assignment.ip)))
        _put_all(store, tunnels)

    flows = flows or FlowSettings()
    if server:
        state.server = _start_server(builder)
        flows = FlowSettings(
            flows.interval, flows.allowed_level, flows.denied_level, state.server, flows.enabled
        )
        builder.save()

    underlay = f"{prefix}ul"
    builder.netns(underlay)
    with Netlink(underlay) as nl:
        nl.create_bridge(UNDERLAY_BRIDGE)
        nl.set_up(UNDERLAY_BRIDGE)
    for index, (node, netns) in enumerate(state.nodes.items()):
        builder.netns(netns)
        port = f"n{index}"
        with Netlink(underlay) as nl:
            nl.create_veth(port, UNDERLAY_INTERFACE, peer_netns=netns)
            nl.set_master(port, UNDERLAY_BRIDGE)
            nl.set_up(port)
        with Netlink(netns) as nl:
            nl.add_address(UNDERLAY_INTERFACE, ip_interface(f"{underlay_address(index)}/24"))
            nl.set_up(UNDERLAY_INTERFACE)
            nl.set_sysctl("net.ipv4.ip_forward", 1)
        _start_agent(builder, node, flows)

    # pyroute2 forks to create a namespace and to open a socket in one: never from a thread
    # while other threads run, so the namespaces are made here, before the pool starts.
    for record in state.pods.values():
        builder.netns(record.netns)

    served = {pod_key(pod): container_ports(pod, served=True) for pod in pods}
    for key in state.pods:
        resolve_traffic(state, key)  # a bad target fails before anything is built

    def attach(key: str) -> None:
        record = state.pods[key]
        ip = cni_add(state, key, record)
        with builder.lock:
            record.ip = ip
            state.save()
        specs = [f"{p['protocol'].lower()}/{p['port']}" for p in served[key]]
        for number, command in enumerate(record.commands):
            builder.spawn(
                command,
                role="command",
                netns=record.netns,
                owner=key,
                log=builder.file(f"command-{record.netns}-{number}.log"),
            )
        if specs:
            builder.spawn(
                [*SERVER_COMMAND, *specs],
                role="server",
                netns=record.netns,
                owner=key,
                log=builder.file(f"server-{record.netns}.log"),
                ready_line=True,
            )
        if record.waf_ports:
            _start_waf(builder, key, record)
        if on_pod is not None:
            on_pod(key)

    with ThreadPoolExecutor(max_workers=PARALLEL_PODS) as pool:
        futures = [pool.submit(attach, key) for key in state.pods]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            for future in futures:
                future.cancel()
            pool.shutdown(wait=True)
            raise failed[0].exception() or LabError("attaching a pod failed")

    for key, record in state.pods.items():
        targets = resolve_traffic(state, key)
        if targets:
            target_file = builder.file(f"traffic-{record.netns}.json")
            target_file.write_text(json.dumps(targets))
            log = builder.file(f"traffic-{record.netns}.log")
            builder.file(f"traffic-{record.netns}.log.1")
            builder.spawn(
                [*CLIENT_COMMAND, str(target_file), str(log), str(record.traffic_interval)],
                role="client",
                netns=record.netns,
                owner=key,
                log=builder.file(f"client-{record.netns}.log"),
            )

    wait_programmed(state, timeout=timeout)
    state.phase = "up"
    builder.save()
    return state


@dataclass(frozen=True)
class FlowSettings:
    """The agents' flow logs: every ``interval`` seconds, at these aggregation levels, to the
    state directory's ``flows-<node>.ndjson`` and, if given, to ``server``."""

    interval: float = 15.0
    allowed_level: int = 2
    denied_level: int = 1
    server: str | None = None
    enabled: bool = True


def _palisade_command() -> list[str]:
    script = Path(sys.executable).parent / "palisade"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from palisade.cli import main; main()"]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_server(builder: _Builder, timeout: float = 30.0) -> str:
    """``palisade server`` for the lab, on loopback; returns its URL once it answers."""
    import httpx

    state = builder.state
    port = _free_port()
    flow_store = builder.file("flows.duckdb")
    builder.file("flows.duckdb.wal")
    for name in ("palisade-events.db", "palisade-events.db-wal", "palisade-events.db-shm"):
        builder.file(name)
    socket_path = builder.file("server.sock")
    record = builder.spawn(
        [
            *_palisade_command(),
            "server",
            *("--listen", f"127.0.0.1:{port}"),
            *("--datastore", state.datastore),
            *("--flow-store", str(flow_store)),
            *("--unix-socket", str(socket_path)),
        ],
        role="api",
        netns=None,
        owner="server",
        log=builder.file("server.log"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1.0).status_code == 200:
                with builder.lock:
                    state.server_socket = str(socket_path)
                return url
        except httpx.HTTPError:
            pass
        if not _alive(record) or time.monotonic() > deadline:
            raise LabError(
                f"the lab's server did not start: {_tail(builder.directory / 'server.log')}"
            )
        time.sleep(0.1)


def _start_waf(builder: _Builder, key: str, record: PodRecord) -> None:
    """A WAF proxy in the pod's namespace for each protected port, then the redirect."""
    state = builder.state
    namespace, name = key.split("/", 1)
    for index, port in enumerate(record.waf_ports):
        events = [
            "--events-log",
            str(builder.file(f"waf-events-{record.netns}-{port}.jsonl")),
        ]
        if state.server_socket:
            events += ["--server", f"unix:{state.server_socket}"]
        builder.spawn(
            [
                *_palisade_command(),
                *("waf", "proxy", "--listen", f"0.0.0.0:{WAF_PROXY_PORT + index}"),
                *("--upstream", f"127.0.0.1:{port}", "--datastore", state.datastore),
                *("--namespace", namespace, "--pod", name),
                *events,
            ],
            role="waf",
            netns=record.netns,
            owner=key,
            log=builder.file(f"waf-{record.netns}-{port}.log"),
            ready_line=True,
            ready_timeout=60.0,
        )
    _waf_redirect(record.netns, record.waf_ports)


def flow_log_files(state: LabState) -> list[Path]:
    """Each node's flow-log file (Calico NDJSON)."""
    return [Path(state.state_dir) / f"flows-{node}.ndjson" for node in state.nodes]


def _start_agent(builder: _Builder, node: str, flows: FlowSettings) -> None:
    state = builder.state
    status_file = builder.file(f"agent-{node}.json")
    with builder.lock:
        state.agent_status_files[node] = str(status_file)
    flow_args = [
        *("--flow-log", str(builder.file(f"flows-{node}.ndjson"))),
        *("--flow-interval", str(flows.interval)),
        *("--flow-levels", f"{flows.allowed_level},{flows.denied_level}"),
    ]
    if not flows.enabled:
        flow_args = []
    elif flows.server:
        flow_args += [
            "--flow-server",
            flows.server,
            "--flow-spool",
            str(builder.directory / f"spool-{node}"),
        ]
    builder.spawn(
        [
            *(sys.executable, "-m", "palisade.agent", "--node", node),
            *("--datastore", state.datastore, "--netns", state.nodes[node]),
            *("--status-file", str(status_file)),
            *flow_args,
        ],
        role="agent",
        netns=None,
        owner=node,
        log=builder.file(f"agent-{node}.log"),
    )


def _agent_status(state: LabState, node: str) -> dict[str, Any]:
    try:
        status = json.loads(Path(state.agent_status_files[node]).read_text())
    except (OSError, KeyError, ValueError):
        return {}
    return dict(status)


def _agent_record(state: LabState, node: str) -> ProcessRecord | None:
    records = [p for p in state.processes if p.role == "agent" and p.owner == node]
    return records[-1] if records else None


def wait_programmed(state: LabState, *, timeout: float = 30.0) -> int:
    """Wait until every node's agent has applied the store's current revision (bounded by
    ``timeout``); returns that revision. :class:`LabError` when an agent died or the time
    ran out.

    An agent reports the revision its graph reflects as soon as it has read the change and
    applies it on its next step (at most ``apply_interval``, 0.1 s, later): so once the
    reported revision is current, this waits for the next apply to be counted, or for
    :data:`SETTLE` seconds when that apply was already counted in the same report.
    """
    with open_store(state.datastore) as store:
        target = store.revision
    deadline = time.monotonic() + timeout
    for node in state.nodes:
        record = _agent_record(state, node)
        if record is None:
            raise LabError(f"no agent recorded for {node}")
        log = Path(state.state_dir) / f"agent-{node}.log"
        caught_up: tuple[float, int] | None = None  # (when, applies) at the current revision
        while True:
            status = _agent_status(state, node)
            if (
                status.get("pid") == record.pid
                and status.get("phase") == "watching"
                and status.get("programmed")
                and int(status.get("revision") or 0) >= target
            ):
                applies = int(status.get("applies") or 0)
                if caught_up is None:
                    caught_up = (time.monotonic(), applies)
                elif applies > caught_up[1] or time.monotonic() - caught_up[0] >= SETTLE:
                    break
            if not _alive(record):
                raise LabError(f"the agent of {node} exited: {_tail(log)}")
            if time.monotonic() > deadline:
                raise LabError(f"the agent of {node} did not program revision {target}: {status}")
            time.sleep(0.02)
    return target


# -- status, probe, exec -----------------------------------------------------------------------


def require(state_dir: Path = DEFAULT_STATE_DIR) -> LabState:
    state = LabState.load(state_dir)
    if state is None:
        raise LabError(f"no lab in {state_dir}: run `palisade lab up` first")
    return state


def status(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """``{"pods": {"NS/POD": {"ip", "node", "netns"}}, "nodes": [...], "agents": {...}}``."""
    state = require(state_dir)
    agents: dict[str, Any] = {}
    for node in state.nodes:
        record = _agent_record(state, node)
        agents[node] = {
            "pid": record.pid if record else None,
            "alive": bool(record and _alive(record)),
            **_agent_status(state, node),
        }
    return {
        "lab": state.lab_id,
        "phase": state.phase,
        "datastore": state.datastore,
        "server": state.server,
        "nodes": [{"name": node, "netns": netns} for node, netns in state.nodes.items()],
        "pods": {
            key: {"ip": record.ip, "node": record.node, "netns": record.netns}
            for key, record in sorted(state.pods.items())
        },
        "agents": agents,
    }


def parse_probe(text: str) -> tuple[int | str, str]:
    """``80/TCP``, ``53/udp``, ``http`` (TCP) → (port or port name, ``TCP``/``UDP``)."""
    port_text, _, protocol = text.strip().partition("/")
    protocol = (protocol or "TCP").upper()
    if protocol not in ("TCP", "UDP"):
        raise LabError(f"probe {text!r}: the lab probes TCP and UDP only")
    if not port_text:
        raise LabError(f"probe {text!r}: missing port")
    if port_text.isdigit():
        number = int(port_text)
        if not 1 <= number <= 65535:
            raise LabError(f"probe {text!r}: port must be 1-65535")
        return number, protocol
    return port_text, protocol


def _resolve(record: PodRecord, port: int | str, protocol: str) -> int | None:
    if isinstance(port, int):
        return port
    for declared in record.ports:
        if declared.get("name") == port and declared["protocol"] == protocol:
            return int(declared["port"])
    return None


def probe(specs: Sequence[str], state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """Real connection attempts between every ordered pair of pods for each probe, from
    inside each source pod (sources concurrently, bounded); the JSON shape of ``palisade
    policy matrix --format json``. A named port a destination does not declare is denied
    without an attempt, as the engine denies it. An attempt counts as allowed when it reached
    the destination pod — answered, or refused there because nothing listens on the port —
    since policy drops what it denies (see :mod:`palisade.lab._probe`): the matrix says what
    the network lets through, as the engine's does, on any port."""
    state = require(state_dir)
    parsed = [parse_probe(spec) for spec in specs]
    pods = sorted(
        ((k, r) for k, r in state.pods.items() if r.ip is not None),
        key=lambda item: tuple(item[0].split("/", 1)),
    )
    plans: list[tuple[int, str, str, int]] = []  # (probe index, source, destination, port)
    for index, (port, protocol) in enumerate(parsed):
        for destination, record in pods:
            number = _resolve(record, port, protocol)
            if number is None:
                continue
            for source, _ in pods:
                plans.append((index, source, destination, number))
    ips = {key: str(record.ip) for key, record in pods}

    def run(source: str) -> list[bool]:
        targets = [
            [ips[destination], parsed[index][1].lower(), number]
            for index, s, destination, number in plans
            if s == source
        ]
        completed = subprocess.run(
            [IP, "netns", "exec", state.pods[source].netns, *PROBE_COMMAND],
            input=json.dumps(targets),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if completed.returncode != 0:
            raise LabError(f"probing from {source} failed: {completed.stderr.strip()}")
        return [bool(v) for v in json.loads(completed.stdout)]

    with ThreadPoolExecutor(max_workers=PARALLEL_PROBES) as pool:
        outcomes = dict(zip([k for k, _ in pods], pool.map(run, [k for k, _ in pods]), strict=True))
    allowed = [{s: dict.fromkeys((d for d, _ in pods), False) for s, _ in pods} for _ in parsed]
    positions = dict.fromkeys(ips, 0)
    for index, source, destination, _ in plans:
        allowed[index][source][destination] = outcomes[source][positions[source]]
        positions[source] += 1
    return {
        "probes": [
            {"port": str(port), "protocol": protocol, "allowed": allowed[index]}
            for index, (port, protocol) in enumerate(parsed)
        ]
    }


def traffic(state_dir: Path = DEFAULT_STATE_DIR, window: float = 10.0) -> list[dict[str, Any]]:
    """What the pods' client loops saw in the last ``window`` seconds, per source and target:
    ``[{"from": "NS/POD", "to": "NS/POD:PORT/PROTO", "allowed": n, "denied": n}, …]``."""
    state = require(state_dir)
    since = time.time() - window
    counts: dict[tuple[str, str], list[int]] = {}
    for key, record in sorted(state.pods.items()):
        log = Path(state.state_dir) / f"traffic-{record.netns}.log"
        lines: list[str] = []
        for path in (log.with_name(log.name + ".1"), log):
            with contextlib.suppress(OSError):
                lines.extend(path.read_text(errors="replace").splitlines())
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line the client is still writing
            if float(entry.get("time", 0)) < since:
                continue
            tally = counts.setdefault((key, str(entry.get("target"))), [0, 0])
            tally[0 if entry.get("ok") else 1] += 1
    return [
        {"from": source, "to": target, "allowed": allowed, "denied": denied}
        for (source, target), (allowed, denied) in counts.items()
    ]


def exec_command(pod: str, argv: Sequence[str], state_dir: Path = DEFAULT_STATE_DIR) -> list[str]:
    """The command line that runs ``argv`` inside pod ``NS/POD``'s network namespace."""
    state = require(state_dir)
    record = state.pods.get(pod)
    if record is None:
        raise LabError(f"no pod {pod!r} in the lab (known: {', '.join(sorted(state.pods))})")
    return [IP, "netns", "exec", record.netns, *argv]


def documents(state_dir: Path = DEFAULT_STATE_DIR) -> list[dict[str, Any]]:
    """Every document in the lab's datastore (for the policy engine's view of the lab)."""
    state = require(state_dir)
    with open_store(state.datastore) as store:
        return [item.value for item in store.list()]


# -- down --------------------------------------------------------------------------------------


@dataclass
class DownReport:
    processes: list[int] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _wait_gone(pids: Iterator[int] | Sequence[int], timeout: float) -> list[int]:
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for pid in pending:
            _reap(pid)
        pending = [pid for pid in pending if _start_time(pid) is not None]
        if pending:
            time.sleep(0.02)
    return pending


def down(state_dir: Path = DEFAULT_STATE_DIR) -> DownReport:
    """Remove everything the lab in ``state_dir`` recorded: processes (by PID and start time,
    and any process left in one of its namespaces), each node's nftables table, the
    namespaces (with the veths in them), files and the state. Idempotent; works on the
    state of an interrupted ``up``."""
    report = DownReport()
    state = LabState.load(state_dir)
    if state is None:
        return report
    state.phase = "removing"
    state.save()
    live = [p for p in state.processes if _alive(p)]
    agents = [p.pid for p in live if p.role == "agent"]
    for pid in agents:
        _signal(pid, signal.SIGTERM)
    for record in live:
        if record.role != "agent":
            _signal(record.pid, signal.SIGKILL)
    for pid in _wait_gone(agents, AGENT_GRACE):
        _signal(pid, signal.SIGKILL)
    report.processes.extend(p.pid for p in live)
    namespaces = list(dict.fromkeys([*state.netns, *list_netns(lab_prefix(state.lab_id))]))
    # Processes ``up`` started but was killed before it could record: anything in one of the
    # lab's namespaces, and agents naming one of the lab's status files.
    strays = [
        pid
        for pid in dict.fromkeys(
            [
                *_processes_in(namespaces),
                *_processes_naming(list(state.agent_status_files.values())),
            ]
        )
        if pid not in {p.pid for p in live}
    ]
    for pid in strays:
        _signal(pid, signal.SIGKILL)
    report.processes.extend(strays)
    left = _wait_gone([p.pid for p in live] + strays, 10.0)
    _reap_finished()
    if left:
        raise LabError(f"processes of the lab did not exit: {left}")
    for netns in state.nodes.values():
        if netns_exists(netns):
            subprocess.run(
                [IP, "netns", "exec", netns, NFT, "delete", "table", "inet", "palisade"],
                capture_output=True,
                check=False,
            )
    for netns in reversed(namespaces):
        try:
            if delete_netns(netns):
                report.namespaces.append(netns)
        except NetlinkError as exc:
            raise LabError(f"cannot delete namespace {netns}: {exc}") from exc
    for name in state.files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
            report.files.append(name)
    for node in state.nodes:  # the agents' flow spools (batches a server never took)
        shutil.rmtree(Path(state.state_dir) / f"spool-{node}", ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        state.path.with_suffix(".tmp").unlink()
    state.path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        Path(state.state_dir).rmdir()  # only if nothing else is in it
    return report
