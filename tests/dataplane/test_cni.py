"""The ``palisade-cni`` executable, run for real against namespaces the test creates.

Tests marked ``root`` run the plugin inside a test-made "node" namespace
(``ip netns exec NODE palisade-cni``) so the root namespace is never touched; pods are further
test-made namespaces, passed as ``CNI_NETNS=/var/run/netns/NAME``. The datastore is a SQLite
file in ``tmp_path``. The rest drive the protocol in process and need no root.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from palisade.calc import workload_interface_name
from palisade.dataplane.cni import SUPPORTED_VERSIONS, CniError, ErrorCode, run
from palisade.dataplane.cni._protocol import parse_config
from palisade.dataplane.ipam import StoreAllocator
from palisade.dataplane.linux import (
    RTPROT_PALISADE,
    Netlink,
    Route,
    delete_netns,
    run_in_netns,
)
from palisade.datastore import ResourceKey, open_store
from tests.dataplane.conftest import Namespaces

PLUGIN = Path(sys.executable).parent / "palisade-cni"
IP = shutil.which("ip") or "/usr/sbin/ip"
POOL = "10.91.0.0/24"


@dataclass
class Outcome:
    code: int
    output: Any
    stderr: str


class Cni:
    """Runs the plugin in the node namespace with a SQLite datastore of the test's own."""

    def __init__(self, node: str, db: Path) -> None:
        self.node = node
        self.db = db
        self.config: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": "palisade",
            "type": "palisade-cni",
            "datastore": f"sqlite:///{db}",
            "nodename": "node-1",
            "mtu": 1400,
        }

    def __call__(
        self,
        command: str,
        container: str = "",
        pod_netns: str | None = None,
        pod: str | None = None,
        *,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Outcome:
        environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command}
        if container:
            environment.update(CNI_CONTAINERID=container, CNI_IFNAME="eth0", CNI_PATH="/opt/cni")
        if pod_netns is not None:
            environment["CNI_NETNS"] = f"/var/run/netns/{pod_netns}"
        if pod is not None:
            environment["CNI_ARGS"] = f"K8S_POD_NAMESPACE=shop;K8S_POD_NAME={pod}"
        environment.update(env or {})
        completed = subprocess.run(
            [IP, "netns", "exec", self.node, str(PLUGIN)],
            input=json.dumps(self.config) if stdin is None else stdin,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = json.loads(completed.stdout) if completed.stdout.strip() else None
        return Outcome(completed.returncode, output, completed.stderr)

    def store_put(self, document: dict[str, Any]) -> None:
        with open_store(f"sqlite:///{self.db}") as store:
            store.put(ResourceKey.of(document), document)

    def pod_document(self, name: str) -> dict[str, Any] | None:
        with open_store(f"sqlite:///{self.db}") as store:
            stored = store.get(ResourceKey("Pod", "shop", name))
        return None if stored is None else stored.value

    def allocations(self) -> dict[str, str]:
        with open_store(f"sqlite:///{self.db}") as store:
            blocks = StoreAllocator(store, "node-1").blocks()
        return {str(ip): h for block in blocks for ip, h in block.allocations.items()}


def pool(name: str, cidr: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, **spec},
    }


@pytest.fixture
def cni(netns: Namespaces, tmp_path: Path) -> Cni:
    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} is missing: pip install -e '.[dev]'", pytrace=False)
    plugin = Cni(netns.new("n"), tmp_path / "store.db")
    plugin.store_put(pool("pods", POOL))
    return plugin


def snapshot(cni: Cni, *pod_namespaces: str) -> dict[str, Any]:
    """Everything an ADD could leave behind: links, addresses, routes, neighbours, records."""
    state: dict[str, Any] = {}
    for name in (cni.node, *pod_namespaces):
        with Netlink(name) as nl:
            links = [link.name for link in nl.links()]
            state[name] = {
                "links": links,
                "addresses": sorted(str(a.interface) for ln in links for a in nl.addresses(ln)),
                "routes": sorted(str(r) for r in nl.routes(protocol=RTPROT_PALISADE)),
                "neighbours": sorted(str(n) for n in nl.neighbours()),
            }
    with open_store(f"sqlite:///{cni.db}") as store:
        state["pods"] = [r.value for r in store.list("Pod")]
    state["allocations"] = cni.allocations()
    return state


def tcp_exchange(server_netns: str, server_ip: str, client_netns: str) -> str:
    """A real TCP connection from one pod to the other; returns what the server echoed."""
    port = 18080
    server = subprocess.Popen(
        [
            IP,
            "netns",
            "exec",
            server_netns,
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import socket
            s = socket.create_server(("{server_ip}", {port}))
            s.settimeout(20)
            print("ready", flush=True)
            conn, _ = s.accept()
            conn.sendall(b"echo:" + conn.recv(100))
            conn.close()
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        client = run_in_netns(
            client_netns,
            [
                sys.executable,
                "-c",
                textwrap.dedent(f"""
                import socket
                c = socket.create_connection(("{server_ip}", {port}), timeout=10)
                c.sendall(b"hello")
                print(c.recv(100).decode())
                """),
            ],
            timeout=30,
            check=True,
        )
        return client.stdout.strip()
    finally:
        server.kill()
        server.wait(timeout=10)


# -- the normal life of two pods -----------------------------------------------------------------


@pytest.mark.root
def test_add_check_connect_and_delete_two_pods(cni: Cni, netns: Namespaces) -> None:
    empty = snapshot(cni, netns.a, netns.b)
    first = cni("ADD", "cont-a", netns.a, "pod-a")
    second = cni("ADD", "cont-b", netns.b, "pod-b")
    assert first.code == 0, first
    assert second.code == 0, second

    result = first.output
    host_a = workload_interface_name("shop", "pod-a")
    assert result["cniVersion"] == "1.0.0"
    assert [i["name"] for i in result["interfaces"]] == [host_a, "eth0"]
    assert result["interfaces"][1]["sandbox"] == f"/var/run/netns/{netns.a}"
    (ip_a_entry,) = result["ips"]
    assert ip_a_entry["interface"] == 1 and ip_a_entry["gateway"] == "169.254.1.1"
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    ip_a = ip_a_entry["address"].removesuffix("/32")
    ip_b = second.output["ips"][0]["address"].removesuffix("/32")
    assert ip_a != ip_b
    assert {ip_address(ip_a), ip_address(ip_b)} <= set(ip_network(POOL))

    # The kernel: the pod's address and routes, the node's /32 routes with our protocol.
    with Netlink(netns.a) as pod_side:
        eth0 = pod_side.link("eth0")
        assert eth0.up and eth0.mtu == 1400
        v4 = [str(a.interface) for a in pod_side.addresses("eth0") if a.interface.version == 4]
        assert v4 == [f"{ip_a}/32"]
        default = [r for r in pod_side.routes(dev="eth0") if r.dst.prefixlen == 0]
        assert [str(r.gateway) for r in default] == ["169.254.1.1"]
    with Netlink(cni.node) as node:
        assert node.link(host_a).up
        routes = node.routes(protocol=RTPROT_PALISADE)
        assert Route(ip_network(f"{ip_a}/32"), None, host_a) in routes
        assert (
            Route(ip_network(f"{ip_b}/32"), None, workload_interface_name("shop", "pod-b"))
            in routes
        )
        assert node.get_sysctl(f"net/ipv4/conf/{host_a}/proxy_arp") == "1"

    # The datastore: the Pod record and the IPAM allocation.
    pod_a = cni.pod_document("pod-a")
    assert pod_a is not None
    assert pod_a["status"]["podIP"] == ip_a
    assert pod_a["status"]["podIPs"] == [{"ip": ip_a}]
    assert pod_a["spec"]["nodeName"] == "node-1"
    assert pod_a["metadata"]["annotations"]["palisade.io/containerID"] == "cont-a"
    assert cni.allocations() == {ip_a: "cont-a.eth0", ip_b: "cont-b.eth0"}

    # Real traffic between the pods, routed by the node.
    with Netlink(cni.node) as node:
        node.set_sysctl("net.ipv4.ip_forward", 1)
    assert tcp_exchange(netns.a, ip_a, netns.b) == "echo:hello"
    assert tcp_exchange(netns.b, ip_b, netns.a) == "echo:hello"

    # CHECK passes, then fails once the pod's address is taken away by hand.
    assert cni("CHECK", "cont-a", netns.a, "pod-a").code == 0
    assert cni("CHECK", "cont-b", netns.b, "pod-b").code == 0
    with Netlink(netns.a) as pod_side:
        pod_side.delete_address("eth0", pod_side.addresses("eth0")[0].interface)
    damaged = cni("CHECK", "cont-a", netns.a, "pod-a")
    assert damaged.code != 0
    assert damaged.output["code"] == 102
    assert f"address {ip_a}/32 is not on eth0" in damaged.output["msg"]

    # DEL, twice each, and with and without CNI_ARGS: all gone.
    for _ in range(2):
        deleted = cni("DEL", "cont-a", netns.a, "pod-a")
        assert (deleted.code, deleted.output) == (0, None), deleted
        assert cni("DEL", "cont-b", netns.b).code == 0
    assert snapshot(cni, netns.a, netns.b) == empty
    # The freed address is handed out again.
    again = cni("ADD", "cont-c", netns.a, "pod-c")
    assert again.code == 0 and again.output["ips"][0]["address"] in (f"{ip_a}/32", f"{ip_b}/32")
    assert cni("DEL", "cont-c", netns.a, "pod-c").code == 0


@pytest.mark.root
def test_existing_pod_document_is_updated_and_restored(cni: Cni, netns: Namespaces) -> None:
    document = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }
    cni.store_put(document)
    added = cni("ADD", "cont-w", netns.a, "web")
    assert added.code == 0, added
    recorded = cni.pod_document("web")
    assert recorded is not None
    assert recorded["metadata"]["labels"] == {"app": "web"}
    assert recorded["status"]["podIP"] == added.output["ips"][0]["address"].removesuffix("/32")
    assert cni("DEL", "cont-w", netns.a, "web").code == 0
    restored = cni.pod_document("web")
    assert restored is not None
    restored["metadata"].pop("resourceVersion")
    restored["metadata"].pop("annotations")
    assert restored == {**document, "status": {}}


@pytest.mark.root
def test_del_after_the_pod_namespace_is_gone(cni: Cni, netns: Namespaces) -> None:
    assert cni("ADD", "cont-a", netns.a, "pod-a").code == 0
    gone = netns.new("gone")
    assert cni("DEL", "cont-x", gone, "pod-x").code == 0  # never added: nothing to do
    delete_netns(netns.a)  # the sandbox is gone before the runtime calls DEL
    deleted = cni("DEL", "cont-a", netns.a, "pod-a")
    assert deleted.code == 0, deleted
    state = snapshot(cni)
    assert state[cni.node]["links"] == ["lo"]
    assert state["allocations"] == {} and state["pods"] == []


@pytest.mark.root
def test_parallel_adds_get_distinct_addresses(cni: Cni, netns: Namespaces) -> None:
    # Runtimes run ADDs for different pods at the same time.
    empty = snapshot(cni)
    pods = [(f"cont-{i}", netns.new(f"p{i}"), f"pod-{i}") for i in range(5)]
    with ThreadPoolExecutor(max_workers=len(pods)) as pool_:
        outcomes = list(pool_.map(lambda p: cni("ADD", *p), pods))
    assert [o.code for o in outcomes] == [0] * len(pods), outcomes
    addresses = [o.output["ips"][0]["address"] for o in outcomes]
    assert len(set(addresses)) == len(pods)
    assert sorted(cni.allocations().values()) == sorted(f"{c}.eth0" for c, _, _ in pods)
    for container, pod_netns, pod in pods:
        assert cni("CHECK", container, pod_netns, pod).code == 0
    with ThreadPoolExecutor(max_workers=len(pods)) as pool_:
        deleted = list(pool_.map(lambda p: cni("DEL", *p), pods))
    assert [d.code for d in deleted] == [0] * len(pods)
    assert snapshot(cni) == empty


# -- VERSION -------------------------------------------------------------------------------------


@pytest.mark.root
def test_version(cni: Cni) -> None:
    reported = cni("VERSION")
    assert reported.code == 0
    assert reported.output["cniVersion"] == "1.0.0"
    assert {"0.4.0", "1.0.0", "1.1.0"} <= set(reported.output["supportedVersions"])
    old = cni("VERSION", stdin='{"cniVersion": "0.4.0"}')
    assert old.output["cniVersion"] == "0.4.0"
    assert cni("VERSION", stdin="").code == 0


@pytest.mark.root
def test_old_version_result_carries_ip_version(cni: Cni, netns: Namespaces) -> None:
    cni.config["cniVersion"] = "0.4.0"
    added = cni("ADD", "cont-a", netns.a, "pod-a")
    assert added.code == 0, added
    assert added.output["ips"][0]["version"] == "4"
    assert cni("DEL", "cont-a", netns.a, "pod-a").code == 0


# -- errors leave nothing behind -----------------------------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("not json", 6),
        ("no cniVersion", 7),
        ("unsupported version", 1),
        ("foreign ipam", 2),
        ("bad datastore url", 7),
        ("unknown command", 4),
        ("no container id", 4),
        ("no pod in CNI_ARGS", 4),
        ("netns path not named", 4),
        ("netns missing", 3),
        ("exhausted pool", 101),
        ("duplicate add", 100),
        ("broken pod document", 103),
    ],
)
def test_failed_add_is_a_spec_error_and_leaves_nothing(
    cni: Cni, netns: Namespaces, case: str, code: int
) -> None:
    # Pod a is attached first, so every case runs beside a live attachment it must not disturb.
    first = cni("ADD", "cont-a", netns.a, "pod-a")
    assert first.code == 0, first
    if case == "exhausted pool":
        cni.store_put(pool("pods", POOL, disabled=True))
        cni.store_put(pool("tiny", "10.92.0.0/32", blockSize=32))
        assert cni("ADD", "cont-z", netns.new("z"), "pod-z").code == 0  # takes the only address
    if case == "broken pod document":
        cni.store_put(
            {"kind": "Pod", "metadata": {"name": "pod-b", "namespace": "shop"}, "status": "x"}
        )
    before = snapshot(cni, netns.a, netns.b)

    stdin: str | None = None
    env: dict[str, str] = {}
    command, pod = "ADD", "pod-b"
    if case == "not json":
        stdin = "{not json"
    elif case == "no cniVersion":
        stdin = json.dumps({k: v for k, v in cni.config.items() if k != "cniVersion"})
    elif case == "unsupported version":
        cni.config["cniVersion"] = "9.9.9"
    elif case == "foreign ipam":
        cni.config["ipam"] = {"type": "host-local"}
    elif case == "bad datastore url":
        cni.config["datastore"] = "mysql://nowhere"
    elif case == "unknown command":
        command = "FROB"
    elif case == "no container id":
        env["CNI_CONTAINERID"] = ""
    elif case == "no pod in CNI_ARGS":
        env["CNI_ARGS"] = "IgnoreUnknown=1"
    elif case == "netns path not named":
        env["CNI_NETNS"] = "/proc/1/ns/net"
    elif case == "netns missing":
        env["CNI_NETNS"] = "/var/run/netns/pal-no-such-netns"
    elif case == "duplicate add":
        pod = "pod-a"

    container = "cont-a" if case == "duplicate add" else "cont-b"
    pod_netns = netns.a if case == "duplicate add" else netns.b
    failed = cni(command, container, pod_netns, pod, stdin=stdin, env=env)

    assert failed.code != 0, failed
    assert failed.output["code"] == code, failed.output
    assert isinstance(failed.output["msg"], str) and failed.output["msg"]
    assert failed.output["cniVersion"] in ("1.0.0", "0.4.0")
    assert snapshot(cni, netns.a, netns.b) == before
    cni.config = Cni(cni.node, cni.db).config
    assert cni("CHECK", "cont-a", netns.a, "pod-a").code == 0  # the live pod is untouched


@pytest.mark.root
def test_status_and_gc(cni: Cni, netns: Namespaces) -> None:
    cni.config["cniVersion"] = "1.1.0"
    assert cni("STATUS").code == 0
    assert cni("ADD", "cont-a", netns.a, "pod-a").code == 0
    assert cni("ADD", "cont-b", netns.b, "pod-b").code == 0
    cni.config["cni.dev/valid-attachments"] = [{"containerID": "cont-a", "ifname": "eth0"}]
    assert cni("GC").code == 0
    assert set(cni.allocations().values()) == {"cont-a.eth0"}
    with Netlink(netns.b) as pod_side:
        assert pod_side.find_link("eth0") is None
    assert cni("CHECK", "cont-a", netns.a, "pod-a").code == 0
    assert cni("DEL", "cont-a", netns.a, "pod-a").code == 0
    cni.store_put(pool("pods", POOL, disabled=True))
    not_ready = cni("STATUS")
    assert (not_ready.code, not_ready.output["code"]) == (1, 50)
    cni.config["cniVersion"] = "1.0.0"
    assert cni("STATUS").output["code"] == 1  # STATUS is a 1.1 command


# -- the protocol, in process (no root) ----------------------------------------------------------


def run_plugin(environ: dict[str, str], stdin: str) -> tuple[int, Any]:
    out = io.StringIO()
    code = run(stdin, environ, out)
    return code, json.loads(out.getvalue()) if out.getvalue().strip() else None


CONFIG = json.dumps(
    {"cniVersion": "1.0.0", "name": "n", "type": "palisade-cni", "datastore": "sqlite://:memory:"}
)


@pytest.mark.parametrize(
    ("environ", "stdin", "code", "message"),
    [
        ({"CNI_COMMAND": "VERSION"}, "", 0, None),
        ({}, CONFIG, 4, "CNI_COMMAND is not set"),
        ({"CNI_COMMAND": "add"}, CONFIG, 4, "unknown CNI_COMMAND 'add'"),
        ({"CNI_COMMAND": "ADD"}, "[]", 6, "not a JSON object"),
        ({"CNI_COMMAND": "ADD"}, CONFIG, 4, "CNI_CONTAINERID is not set"),
        (
            {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0"},
            CONFIG,
            4,
            "CNI_NETNS is not set",
        ),
        (
            {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_IFNAME": "a-very-long-ifname"},
            CONFIG,
            4,
            "no interface name",
        ),
        (
            {
                "CNI_COMMAND": "DEL",
                "CNI_CONTAINERID": "c",
                "CNI_IFNAME": "eth0",
                "CNI_ARGS": "novalue",
            },
            CONFIG,
            4,
            "malformed pair",
        ),
        ({"CNI_COMMAND": "GC"}, CONFIG, 1, "GC needs cniVersion 1.1.0"),
        ({"CNI_COMMAND": "CHECK"}, CONFIG.replace("1.0.0", "0.3.1"), 1, "CHECK needs"),
        ({"CNI_COMMAND": "STATUS"}, CONFIG.replace("1.0.0", "1.1.0"), 1, "no enabled IPv4"),
    ],
)
def test_protocol_errors(
    environ: dict[str, str], stdin: str, code: int, message: str | None
) -> None:
    status, output = run_plugin(environ, stdin)
    if code == 0:
        assert status == 0 and "supportedVersions" in output
        return
    assert status == 1
    assert output["code"] == (50 if environ.get("CNI_COMMAND") == "STATUS" else code)
    assert message is not None and message in output["msg"]
    assert output["cniVersion"] in SUPPORTED_VERSIONS


def test_del_of_unknown_container_succeeds_in_process(tmp_path: Path) -> None:
    config = json.loads(CONFIG) | {"datastore": f"sqlite:///{tmp_path / 's.db'}"}
    environ = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "gone", "CNI_IFNAME": "eth0"}
    assert run_plugin(environ, json.dumps(config)) == (0, None)


def test_parse_config_defaults_and_checks() -> None:
    conf = parse_config(CONFIG, "host-1")
    assert (conf.nodename, conf.mtu, conf.prev_result) == ("host-1", 1500, None)
    for bad, code in [
        ({"mtu": "big"}, ErrorCode.INVALID_CONFIG),
        ({"mtu": True}, ErrorCode.INVALID_CONFIG),
        ({"nodename": ""}, ErrorCode.INVALID_CONFIG),
        ({"datastore": 3}, ErrorCode.INVALID_CONFIG),
        ({"ipam": {"type": "host-local"}}, ErrorCode.UNSUPPORTED_FIELD),
        ({"cniVersion": "0.2.0"}, ErrorCode.INCOMPATIBLE_VERSION),
    ]:
        with pytest.raises(CniError) as raised:
            parse_config(json.dumps(json.loads(CONFIG) | bad), "host-1")
        assert raised.value.code == code, bad
    assert parse_config(json.dumps(json.loads(CONFIG) | {"ipam": {"type": "palisade-ipam"}}), "h")
