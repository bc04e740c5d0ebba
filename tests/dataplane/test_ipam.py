"""IPAM: the sans-I/O planner and the store-backed allocator (no root needed)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from palisade.dataplane.ipam import (
    Block,
    IpamError,
    Pool,
    PoolExhausted,
    StoreAllocator,
    block_name,
    lock_path_for,
    plan_assign,
    plan_release,
)
from palisade.datastore import ResourceKey, SqliteStore, open_store


def pool_doc(name: str, cidr: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, **spec},
    }


def put_pool(store: SqliteStore, name: str, cidr: str, **spec: Any) -> None:
    store.put(ResourceKey("IPPool", None, name), pool_doc(name, cidr, **spec))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, SqliteStore]]:
    url = f"sqlite:///{tmp_path / 'ipam.db'}"
    store = open_store(url)
    assert isinstance(store, SqliteStore)
    try:
        yield url, store
    finally:
        store.close()


def allocator(url: str, store: SqliteStore, node: str = "node-1") -> StoreAllocator:
    return StoreAllocator(store, node, lock_path=lock_path_for(url))


# -- the sans-I/O core ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "selected"),
    [
        ({}, True),
        ({"disabled": True}, False),
        ({"nodeSelector": "zone == 'a'"}, True),
        ({"nodeSelector": "zone == 'b'"}, False),
        ({"nodeSelector": "all()"}, True),
        ({"allowedUses": ["Tunnel"]}, False),
        ({"allowedUses": ["Tunnel", "Workload"]}, True),
        ({"assignmentMode": "Manual"}, False),
    ],
)
def test_pool_eligibility(spec: dict[str, Any], selected: bool) -> None:
    pool = Pool.from_document(pool_doc("p", "10.70.0.0/24", **spec))
    if selected:
        plan = plan_assign([], [pool], "n1", {"zone": "a"}, "h", {})
        assert plan.assignments[0].ip == ipaddress.ip_address("10.70.0.0")
    else:
        with pytest.raises(PoolExhausted, match="no enabled IPv4 IP pool"):
            plan_assign([], [pool], "n1", {"zone": "a"}, "h", {})


def test_default_block_size_and_name() -> None:
    pool = Pool.from_document(pool_doc("p", "10.70.0.0/16"))
    assert pool.block_size == 26
    plan = plan_assign([], [pool], "n1", {}, "h", {})
    (block,) = plan.writes
    assert str(block.cidr) == "10.70.0.0/26"
    assert block_name(block.cidr) == "10-70-0-0-26"
    assert block.affinity == "host:n1"
    assert Block.from_document(block.to_document()) == block


def test_bad_block_size_is_an_error() -> None:
    with pytest.raises(IpamError, match="blockSize"):
        Pool.from_document(pool_doc("p", "10.70.0.0/24", blockSize=20))


def test_release_plan_is_idempotent() -> None:
    pool = Pool.from_document(pool_doc("p", "10.70.0.0/24"))
    plan = plan_assign([], [pool], "n1", {}, "h", {"pod": "x"})
    released = plan_release(plan.writes, "h")
    assert [a.ip for a in released.assignments] == [plan.assignments[0].ip]
    assert dict(released.writes[0].allocations) == {}
    assert plan_release(released.writes, "h").writes == ()


# -- the store-backed allocator ------------------------------------------------------------------


def test_many_allocations_are_unique(db: tuple[str, SqliteStore]) -> None:
    url, store = db
    put_pool(store, "p", "10.71.0.0/22", blockSize=28)
    ipam = allocator(url, store)
    ips = [ipam.assign(f"h{i}").ip for i in range(200)]
    assert len(set(ips)) == 200
    assert all(ip in ipaddress.ip_network("10.71.0.0/22") for ip in ips)
    blocks = ipam.blocks()
    assert {b.affinity for b in blocks} == {"host:node-1"}
    assert len(blocks) == 13  # 200 addresses in blocks of 16


def test_two_allocators_on_one_sqlite_file_never_collide(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    setup = open_store(url)
    setup.put(ResourceKey("IPPool", None, "p"), pool_doc("p", "10.72.0.0/24", blockSize=29))
    setup.close()
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def run(node: str) -> None:
        # Each thread has its own store connection and allocator, as two processes would.
        store = open_store(url)
        try:
            ipam = StoreAllocator(store, node, lock_path=lock_path_for(url))
            results[node] = [str(ipam.assign(f"{node}-{i}").ip) for i in range(60)]
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in ("node-a", "node-b", "node-a2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    every = [ip for ips in results.values() for ip in ips]
    assert len(every) == 180
    assert len(set(every)) == 180
    # Blocks are per node: no block holds two nodes' addresses.
    check = open_store(url)
    try:
        blocks = StoreAllocator(check, "x").blocks()
    finally:
        check.close()
    for block in blocks:
        owners = {handle.rsplit("-", 1)[0] for handle in block.allocations.values()}
        assert owners == {block.affinity.removeprefix("host:")} if block.affinity else set()


@pytest.mark.parametrize(
    ("nodes", "locked"),
    [
        (("node-a", "node-a", "node-b", "node-c"), True),
        # No shared lock, as for nodes on different machines: the block claims alone must
        # keep two nodes out of one block.
        (("node-a", "node-b", "node-c", "node-d", "node-e"), False),
    ],
)
def test_allocator_processes_on_one_sqlite_file_never_collide(
    tmp_path: Path, nodes: tuple[str, ...], locked: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'processes.db'}"
    with open_store(url) as setup:
        setup.put(ResourceKey("IPPool", None, "p"), pool_doc("p", "10.81.0.0/22", blockSize=29))
    lock = f"lock_path_for({url!r})" if locked else "None"
    script = textwrap.dedent(f"""
        import json, sys
        from palisade.datastore import open_store
        from palisade.dataplane.ipam import StoreAllocator, lock_path_for
        node, worker = sys.argv[1], sys.argv[2]
        with open_store({url!r}) as store:
            ipam = StoreAllocator(store, node, lock_path={lock})
            print(json.dumps([str(ipam.assign(f"{{worker}}-{{i}}").ip) for i in range(40)]))
        """)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, node, f"{node}-w{n}"], stdout=subprocess.PIPE, text=True
        )
        for n, node in enumerate(nodes)
    ]
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * len(nodes)
    every = [ip for output in outputs for ip in json.loads(output)]
    assert len(every) == len(set(every)) == 40 * len(nodes)
    with open_store(url) as check:
        for block in StoreAllocator(check, "x").blocks():
            owners = {handle.split("-w")[0] for handle in block.allocations.values()}
            assert owners <= {str(block.affinity).removeprefix("host:")}


def test_same_node_allocators_share_blocks(db: tuple[str, SqliteStore]) -> None:
    url, store = db
    put_pool(store, "p", "10.73.0.0/24")
    first, second = allocator(url, store), allocator(url, store)
    a = first.assign("a")
    b = second.assign("b")
    assert a.block == b.block and a.ip != b.ip


def test_release_and_reuse(db: tuple[str, SqliteStore]) -> None:
    url, store = db
    put_pool(store, "p", "10.74.0.0/24")
    ipam = allocator(url, store)
    first = ipam.assign("one", {"pod": "one"})
    second = ipam.assign("two")
    assert ipam.attributes("one") == {"node": "node-1", "pod": "one"}
    assert [a.ip for a in ipam.release("one")] == [first.ip]
    assert ipam.release("one") == []  # idempotent
    assert ipam.release("never-assigned") == []
    assert ipam.assignments("one") == []
    assert ipam.attributes("one") is None
    third = ipam.assign("three")
    assert third.ip == first.ip  # the lowest free address comes back
    assert ipam.assignments("two") == [second]


def test_duplicate_handle_is_refused(db: tuple[str, SqliteStore]) -> None:
    url, store = db
    put_pool(store, "p", "10.74.0.0/24")
    ipam = allocator(url, store)
    ipam.assign("h")
    with pytest.raises(IpamError, match="already holds"):
        ipam.assign("h")


def test_full_block_moves_to_next_block(db: tuple[str, SqliteStore]) -> None:
    url, store = db
    put_pool(store, "p", "10.75.0.0/28", blockSize=30)
    ipam = allocator(url, store)
    got = [ipam.assign(f"h{i}") for i in range(5)]
    assert [str(a.block) for a in got] == ["10.75.0.0/30"] * 4 + ["10.75.0.4/30"]
    assert str(got[4].ip) == "10.75.0.4"


def test_pool_exhaustion_is_a_clear_error(db: tuple[str, SqliteStore]) -> None:
    url, store = db
    put_pool(store, "small", "10.76.0.0/30", blockSize=31)
    ipam = allocator(url, store)
    for i in range(4):
        ipam.assign(f"h{i}")
    before = store.revision
    with pytest.raises(PoolExhausted, match="small have no free IPv4 address for node node-1"):
        ipam.assign("h4")
    assert store.revision == before  # nothing written
    ipam.release("h2")
    assert str(ipam.assign("h4").ip) == "10.76.0.2"


def test_other_nodes_blocks_are_not_borrowed(db: tuple[str, SqliteStore]) -> None:
    url, store = db
    put_pool(store, "p", "10.77.0.0/30", blockSize=31)
    a, b = allocator(url, store, "node-a"), allocator(url, store, "node-b")
    a.assign("a1")
    b.assign("b1")
    assert str(a.assign("a2").ip) == "10.77.0.1"
    with pytest.raises(PoolExhausted):
        a.assign("a3")  # node-b's block still has a free address, but it is node-b's


def test_disabled_pool_and_node_selector_from_node_labels(db: tuple[str, SqliteStore]) -> None:
    url, store = db
    put_pool(store, "a-off", "10.78.0.0/24", disabled=True)
    put_pool(store, "b-zone", "10.79.0.0/24", nodeSelector="zone == 'east'")
    put_pool(store, "c-rest", "10.80.0.0/24")
    store.put(
        ResourceKey("Node", None, "east-1"),
        {"kind": "Node", "metadata": {"name": "east-1", "labels": {"zone": "east"}}},
    )
    assert str(allocator(url, store, "east-1").assign("e").ip) == "10.79.0.0"
    assert str(allocator(url, store, "west-1").assign("w").ip) == "10.80.0.0"
