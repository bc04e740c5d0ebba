"""Flow-store benchmark: prints figures, each measured in this run.

    .venv/bin/python bench/flows_bench.py            # 10,000,000 records (ten minutes or more)
    .venv/bin/python bench/flows_bench.py --quick    # a small smoke run (seconds)
    .venv/bin/python bench/flows_bench.py --records 2000000 --repeats 3 --only arrow,http

Input: Calico Enterprise flow-log records (``calico-policy.md`` §6.1) for a day of traffic in
the cluster ``generate_cluster(namespaces=30, pods=2000, policies=300, tiers=3)``: every
workload (pods grouped by generateName) talks to a few others (a skewed popularity), to DNS,
to network sets and to the internet, and some outside addresses call in; about 10% of the
pairs are denied. Allowed records are at aggregation level 2 (no IPs, no source ports),
denied ones at level 1 (with IPs), Calico's defaults; a pod-to-pod connection gives a ``src``
and a ``dst`` record on the two nodes; the hits name the cluster's real policies and tiers;
five-minute intervals (Enterprise's default flush). The templates are built in Python; DuckDB
writes, from the same rows, the NDJSON file (``COPY … (FORMAT json)``) and the Arrow IPC
stream files of ``--arrow-batch`` records each (what agents spool and send), before anything
is timed.

(a) ingestion into an empty file store (``--memory``: in memory), records per second over
    the whole input, medians of ``--repeats`` runs (a fresh store each) — target
    >= 1,000,000/s — by each path:
    - ``arrow``: the agent path into the store, ``FlowStore.ingest_arrow(file)`` per batch
      (one transaction each), and ``FlowStore.ingest_arrow_batches`` of ``--group`` batches
      per transaction (what the server's group commit does when agents send at once);
    - ``http``: the same files POSTed as ``application/vnd.apache.arrow.stream`` to a real
      ``palisade server`` (uvicorn) on loopback by ``--senders`` concurrent senders, from the
      first request to the last acknowledgement;
    - ``json``: a Calico JSON-lines file, ``FlowStore.ingest_ndjson(path)`` (what
      ``palisade flows import`` and old agents use); with, for reference, DuckDB's JSON reader
      alone (every field parsed, nothing stored) and pyarrow's (``pyarrow.json.read_json``,
      multi-threaded C++) over the first million lines: the store keeps DuckDB's, the faster;
(b) ``FlowStore.graph()`` over all records (namespace view), median of 5 — target < 1 s;
    and, for reference, the view with one namespace expanded, a one-hour window, and
    ``top_talkers``/``denied`` over everything.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from palisade.flowstore import ARROW_STREAM_MEDIA_TYPE, FlowStore, to_ipc_stream
from palisade.flowstore._arrow import conform
from palisade.policy.synthetic import generate_cluster

T = TypeVar("T")

INTERVAL = 300
DAY = 86_400
BASE_TIME = 1_717_200_000


def _templates(seed: int) -> list[dict[str, Any]]:
    """One template per (reporter, source, destination, port): everything a record carries
    except its time and counters."""
    rng = random.Random(seed)
    documents = generate_cluster(namespaces=30, pods=2000, policies=300, tiers=3, seed=seed)
    workloads: dict[tuple[str, str], dict[str, Any]] = {}
    policies_by_namespace: dict[str, list[tuple[str, str]]] = defaultdict(list)
    global_policies: list[tuple[str, str]] = []
    network_sets: list[tuple[str, str]] = []
    for document in documents:
        kind = document["kind"]
        metadata = document["metadata"]
        if kind == "Pod":
            namespace = metadata["namespace"]
            aggr = (metadata.get("generateName") or metadata["name"]) + (
                "*" if metadata.get("generateName") else ""
            )
            labels = sorted(f"{k}={v}" for k, v in metadata.get("labels", {}).items())
            ports = [
                (port.get("name", "-"), port["containerPort"], port.get("protocol", "TCP"))
                for container in document["spec"].get("containers", [])
                for port in container.get("ports", [])
            ]
            workload = workloads.setdefault(
                (namespace, aggr),
                {
                    "namespace": namespace,
                    "aggr": aggr,
                    "app": metadata.get("labels", {}).get("app", aggr),
                    "labels": labels,
                    "ports": ports,
                    "pods": [],
                },
            )
            workload["pods"].append(
                (metadata["name"], document["status"]["podIP"], document["spec"]["nodeName"])
            )
        elif kind == "NetworkPolicy":
            tier = document["spec"].get("tier", "default")
            policies_by_namespace[metadata["namespace"]].append((tier, metadata["name"]))
        elif kind == "GlobalNetworkPolicy":
            global_policies.append((document["spec"].get("tier", "default"), metadata["name"]))
        elif kind in ("NetworkSet", "GlobalNetworkSet"):
            network_sets.append((metadata.get("namespace", "-"), metadata["name"]))

    def hits(namespace: str, action: str) -> list[str]:
        chosen: list[str] = []
        if global_policies and rng.random() < 0.4:
            tier, name = rng.choice(global_policies)
            chosen.append(f"{len(chosen)}|{tier}|gnp:{tier}.{name}|pass|{rng.randrange(3)}")
        local = policies_by_namespace.get(namespace)
        if local:
            tier, name = rng.choice(local)
            rule = rng.randrange(4) if action == "allow" else -1
            chosen.append(f"{len(chosen)}|{tier}|np:{namespace}/{tier}.{name}|{action}|{rule}")
        else:
            chosen.append(f"{len(chosen)}|__PROFILE__|pro:kns.{namespace}|{action}|0")
        return chosen

    listed = sorted(workloads.values(), key=lambda w: (w["namespace"], w["aggr"]))
    popularity = [1.0 / (rank + 1) ** 0.8 for rank in range(len(listed))]
    rng.shuffle(popularity)
    dns = [w for w in listed if w["app"] == "coredns"] or listed[:1]
    templates: list[dict[str, Any]] = []

    def endpoint(workload: dict[str, Any] | None, name: str = "pub") -> dict[str, Any]:
        if workload is None:
            kind = "ns" if name not in ("pub", "pvt") else "net"
            namespace, _, set_name = name.rpartition("/")
            return {
                "type": kind,
                "namespace": namespace or "-",
                "aggr": set_name,
                "labels": [],
                "pod": ("-", None, None),
            }
        return {
            "type": "wep",
            "namespace": workload["namespace"],
            "aggr": workload["aggr"],
            "labels": workload["labels"],
            "pod": rng.choice(workload["pods"]),
        }

    def add(source: dict[str, Any], dest: dict[str, Any], port: Any, action: str) -> None:
        port_name, port_number, protocol = port
        policy_namespace = dest["namespace"] if dest["type"] == "wep" else source["namespace"]
        trace = hits(policy_namespace, action)
        service = (
            (dest["namespace"], dest["aggr"].split("-")[0])
            if dest["type"] == "wep"
            else (
                "-",
                "-",
            )
        )
        reporters = []
        if source["type"] == "wep":
            reporters.append("src")
        if dest["type"] == "wep" and (action == "allow" or source["type"] != "wep"):
            reporters.append("dst")
        if action == "deny" and source["type"] == "wep" and dest["type"] == "wep":
            reporters = [rng.choice(["src", "dst"])]
        for reporter in reporters:
            # An allowed source record of a connection denied at the destination is left out:
            # the generator writes one record per reporter that saw the verdict.
            host = (source if reporter == "src" else dest)["pod"][2]
            denied = action == "deny"
            templates.append(
                {
                    "action": action,
                    "reporter": reporter,
                    "proto": protocol.lower(),
                    "source_ip": source["pod"][1] if denied else None,
                    "source_name": source["pod"][0] if denied and source["pod"][1] else "-",
                    "source_name_aggr": source["aggr"],
                    "source_namespace": source["namespace"],
                    "source_type": source["type"],
                    "source_labels": source["labels"],
                    "dest_ip": dest["pod"][1] if denied else None,
                    "dest_port": port_number,
                    "dest_name": dest["pod"][0] if denied and dest["pod"][1] else "-",
                    "dest_name_aggr": dest["aggr"],
                    "dest_namespace": dest["namespace"],
                    "dest_type": dest["type"],
                    "dest_labels": dest["labels"],
                    "dest_service_namespace": service[0],
                    "dest_service_name": service[1],
                    "dest_service_port": port_name if service[0] != "-" else "-",
                    "dest_service_port_num": port_number if service[0] != "-" else None,
                    "enforced": trace,
                    "pending": trace,
                    "host": host or "node-000",
                    "weight": 1.0,
                }
            )

    for workload in listed:
        peers = rng.choices(listed, weights=popularity, k=4)
        for peer in peers:
            if peer is workload or not peer["ports"]:
                continue
            action = "deny" if rng.random() < 0.1 else "allow"
            add(endpoint(workload), endpoint(peer), rng.choice(peer["ports"]), action)
        add(endpoint(workload), endpoint(rng.choice(dns)), ("dns", 53, "UDP"), "allow")
        if rng.random() < 0.3:
            add(endpoint(workload), endpoint(None, "pub"), ("-", 443, "TCP"), "allow")
        if network_sets and rng.random() < 0.1:
            namespace, name = rng.choice(network_sets)
            target = endpoint(None, f"{namespace}/{name}" if namespace != "-" else f"/{name}")
            add(endpoint(workload), target, ("-", 443, "TCP"), rng.choice(["allow", "deny"]))
        if workload["ports"] and rng.random() < 0.05:
            add(endpoint(None, "pub"), endpoint(workload), workload["ports"][0], "deny")
    return templates


def _template_table(connection: duckdb.DuckDBPyConnection, path: Path, seed: int) -> int:
    """The ``templates`` table in ``connection``; returns the number of templates."""
    templates = _templates(seed)
    # executemany is slow in DuckDB: the templates go through a JSON file instead.
    template_file = path.with_name(f"templates-{os.getpid()}.ndjson")
    with template_file.open("w") as out:
        for index, template in enumerate(templates):
            out.write(json.dumps({"id": index, **template}) + "\n")
    connection.execute(
        "CREATE TABLE templates AS SELECT * FROM read_json(?, format='newline_delimited',"
        " columns={'id': 'INTEGER', 'action': 'VARCHAR', 'reporter': 'VARCHAR',"
        " 'proto': 'VARCHAR', 'source_ip': 'VARCHAR', 'source_name': 'VARCHAR',"
        " 'source_name_aggr': 'VARCHAR', 'source_namespace': 'VARCHAR',"
        " 'source_type': 'VARCHAR', 'source_labels': 'VARCHAR[]', 'dest_ip': 'VARCHAR',"
        " 'dest_port': 'INTEGER', 'dest_name': 'VARCHAR', 'dest_name_aggr': 'VARCHAR',"
        " 'dest_namespace': 'VARCHAR', 'dest_type': 'VARCHAR', 'dest_labels': 'VARCHAR[]',"
        " 'dest_service_namespace': 'VARCHAR', 'dest_service_name': 'VARCHAR',"
        " 'dest_service_port': 'VARCHAR', 'dest_service_port_num': 'INTEGER',"
        " 'enforced': 'VARCHAR[]', 'pending': 'VARCHAR[]', 'host': 'VARCHAR',"
        " 'weight': 'DOUBLE'})",
        [str(template_file)],
    )
    template_file.unlink()
    return len(templates)


def _rows_sql(records: int, count: int, *, document: bool) -> str:
    """The input rows in time order (a day of five-minute intervals); a skewed template choice
    per row (busy pairs log in every interval, quiet ones now and then); counters from
    hashes. ``document``: Calico's JSON shape (labels and policies as objects, Calico's
    extra fields); else the store's flat columns (the Arrow batches)."""
    intervals = DAY // INTERVAL
    if document:
        labels = "{'labels': t.source_labels} AS source_labels", "{'labels': t.dest_labels}"
        policies = (
            "{'all_policies': t.enforced, 'enforced_policies': t.enforced,"
            " 'pending_policies': t.pending} AS policies"
        )
        tail = (
            ", 0 AS http_requests_allowed_in, 0 AS http_requests_denied_in,"
            " '-' AS process_name, 0 AS num_process_names"
        )
    else:
        labels = "t.source_labels", "t.dest_labels"
        policies = "t.enforced AS enforced_policies, t.pending AS pending_policies"
        tail = ", NULL::VARCHAR AS extra"
    return f"""
        SELECT
          {BASE_TIME} + (r.range * {intervals} // {records}) * {INTERVAL} AS start_time,
          {BASE_TIME} + (r.range * {intervals} // {records} + 1) * {INTERVAL} AS end_time,
          t.host, t.action, t.reporter, t.proto,
          t.source_ip, NULL::INTEGER AS source_port, t.source_name, t.source_name_aggr,
          t.source_namespace, t.source_type, {labels[0]},
          t.dest_ip, t.dest_port, t.dest_name, t.dest_name_aggr, t.dest_namespace,
          t.dest_type, {labels[1]} AS dest_labels,
          t.dest_service_namespace, t.dest_service_name, t.dest_service_port,
          t.dest_service_port_num, []::VARCHAR[] AS dest_domains, {policies},
          (hash(r.range * 3) % 200000)::BIGINT AS bytes_in,
          (hash(r.range * 5) % 800000)::BIGINT AS bytes_out,
          (hash(r.range * 7) % 300)::BIGINT AS packets_in,
          (hash(r.range * 11) % 900)::BIGINT AS packets_out,
          (1 + hash(r.range * 13) % 20)::BIGINT AS num_flows,
          (hash(r.range * 17) % 10)::BIGINT AS num_flows_started,
          (hash(r.range * 19) % 10)::BIGINT AS num_flows_completed{tail}
        FROM range({records}) r
        JOIN templates t
          ON t.id = least({count - 1},
                          floor({count} * pow((hash(r.range) % 1000003) / 1000003.0, 2))::INTEGER)
        ORDER BY r.range"""


def write_ndjson(path: Path, records: int, seed: int) -> int:
    """Write ``records`` Calico flow-log lines to ``path``; returns the number of templates."""
    connection = duckdb.connect()
    count = _template_table(connection, path, seed)
    connection.execute(
        f"COPY ({_rows_sql(records, count, document=True)}) TO '{path}' (FORMAT json)"
    )
    connection.close()
    return count


def write_arrow_batches(directory: Path, records: int, seed: int, batch: int) -> list[Path]:
    """The same records as Arrow IPC stream files of ``batch`` records each (the agents'
    spool segments), in ``directory``; returns the files in order."""
    directory.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect()
    count = _template_table(connection, directory / "templates", seed)
    reader = connection.sql(_rows_sql(records, count, document=False)).to_arrow_reader(batch)
    files: list[Path] = []

    def emit(table: Any) -> None:
        path = directory / f"{len(files):06d}.arrows"
        path.write_bytes(to_ipc_stream(conform(table)))
        files.append(path)

    import pyarrow as pa

    buffered: Any = None
    for record_batch in reader:
        table = pa.Table.from_batches([record_batch])
        buffered = table if buffered is None else pa.concat_tables([buffered, table])
        while buffered.num_rows >= batch:
            emit(buffered.slice(0, batch))
            buffered = buffered.slice(batch)
    if buffered is not None and buffered.num_rows:
        emit(buffered)
    connection.close()
    return files


def _parse_only(path: Path) -> int:
    """Parse every field of every line with DuckDB's JSON reader and keep nothing: the
    ceiling for any ingestion built on it."""
    connection = duckdb.connect()
    row = connection.execute(
        "SELECT count(*), max(len(source_labels.labels)), max(len(dest_labels.labels)),"
        " max(len(policies.enforced_policies)), max(len(policies.pending_policies)),"
        " max(source_name_aggr), max(dest_name_aggr), max(source_namespace),"
        " max(dest_namespace), max(host), max(dest_service_name), sum(bytes_in),"
        " sum(num_flows), max(dest_port), max(action), max(reporter), max(proto)"
        " FROM read_json(?, format='newline_delimited', columns={'start_time': 'BIGINT',"
        " 'end_time': 'BIGINT', 'host': 'VARCHAR', 'action': 'VARCHAR', 'reporter': 'VARCHAR',"
        " 'proto': 'VARCHAR', 'source_name_aggr': 'VARCHAR', 'source_namespace': 'VARCHAR',"
        " 'source_labels': 'STRUCT(labels VARCHAR[])', 'dest_port': 'INTEGER',"
        " 'dest_name_aggr': 'VARCHAR', 'dest_namespace': 'VARCHAR',"
        " 'dest_labels': 'STRUCT(labels VARCHAR[])', 'dest_service_name': 'VARCHAR',"
        " 'policies': 'STRUCT(enforced_policies VARCHAR[], pending_policies VARCHAR[])',"
        " 'bytes_in': 'BIGINT', 'num_flows': 'BIGINT'})",
        [str(path)],
    ).fetchone()
    connection.close()
    return int(row[0]) if row else 0


def _pyarrow_json(path: Path, limit: int) -> tuple[int, float, float]:
    """pyarrow's JSON reader (multi-threaded C++) over the first ``limit`` lines, every field
    typed as the store reads it, nothing stored: (records, seconds, CPU seconds)."""
    import io

    import pyarrow as pa
    import pyarrow.json as pa_json

    from palisade.flowstore import arrow_schema

    columns = {field.name: field.type for field in arrow_schema()}
    labels = pa.struct([("labels", columns["source_labels"])])
    fields = [
        (name, labels if name in ("source_labels", "dest_labels") else kind)
        for name, kind in columns.items()
        if name not in ("enforced_policies", "pending_policies", "extra")
    ]
    policies = [(name, columns[name]) for name in ("enforced_policies", "pending_policies")]
    schema = pa.schema([*fields, ("policies", pa.struct(policies))])
    with path.open("rb") as lines:
        data = b"".join(line for _, line in zip(range(limit), lines, strict=False))
    cpu_before, started = _cpu_seconds(), time.perf_counter()
    table = pa_json.read_json(
        io.BytesIO(data),
        read_options=pa_json.ReadOptions(block_size=16 << 20),
        parse_options=pa_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore"
        ),
    )
    return table.num_rows, time.perf_counter() - started, _cpu_seconds() - cpu_before


def _median_time(function: Callable[[], T], repeats: int) -> tuple[float, T]:
    times: list[float] = []
    result: Any = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def _row(label: str, value: str, note: str = "") -> None:
    print(f"{label:<78} {value:>16}  {note}".rstrip(), flush=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _send_over_http(directory: Path, files: list[Path], senders: int) -> tuple[float, float, int]:
    """Start ``palisade server`` on loopback with a flow store in ``directory``, POST every
    file as an Arrow batch from ``senders`` threads; (seconds from the first request to the
    last acknowledgement, the server's CPU seconds over them, records the server holds)."""
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (directory / "server.log").open("ab")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "palisade"),
            "server",
            "--listen",
            f"127.0.0.1:{port}",
            "--datastore",
            f"sqlite:///{directory / 'store.db'}",
            "--flow-store",
            str(directory / "flows.duckdb"),
            "--retention",
            "100000d",  # the input's times are in 2024
        ],
        stdout=log,
        stderr=log,
        env={k: v for k, v in os.environ.items() if k != "PALISADE_DATASTORE"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((directory / "server.log").read_text()[-2000:])
            time.sleep(0.05)
        work: queue.Queue[Path] = queue.Queue()
        for path in files:
            work.put(path)
        errors: list[str] = []

        def send() -> None:
            with httpx.Client(base_url=url, timeout=600) as client:
                while True:
                    try:
                        path = work.get_nowait()
                    except queue.Empty:
                        return
                    answer = client.post(
                        "/api/v1/flows/ingest",
                        content=path.read_bytes(),
                        headers={
                            "Content-Type": ARROW_STREAM_MEDIA_TYPE,
                            "X-Palisade-Batch": f"bench/{path.stem}",
                        },
                    )
                    if answer.status_code != 200:
                        errors.append(f"{path.name}: {answer.status_code} {answer.text}")

        threads = [threading.Thread(target=send) for _ in range(senders)]
        cpu_before = _cpu_seconds(server.pid)
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(server.pid) - cpu_before
        if errors:
            raise RuntimeError("; ".join(errors[:3]))
        stored = int(httpx.get(f"{url}/api/v1/health", timeout=600).json()["flow_records"])
        return elapsed, cpu, stored
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default) and its threads."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rate_row(label: str, records: int, seconds: list[float], cpu: list[float]) -> None:
    """Median records/s over the wall-clock times, and the median CPU time the ingesting
    side used (both cores count: on an idle 2-core machine wall >= cpu / 2)."""
    rates = [records / each for each in seconds]
    _row(
        label,
        f"{statistics.median(rates):,.0f} rec/s",
        f"median of {len(seconds)}: {', '.join(f'{each:.2f}' for each in seconds)} s,"
        f" cpu {statistics.median(cpu):.1f} s   target >= 1,000,000/s",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 records, 2 repeats")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--memory", action="store_true", help="in-memory stores (not http)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--input", type=Path, default=None, help="reuse this NDJSON file (written if missing)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="runs per (a) figure")
    parser.add_argument("--arrow-batch", type=int, default=None, help="records per Arrow batch")
    parser.add_argument("--group", type=int, default=10, help="Arrow batches per transaction")
    parser.add_argument("--senders", type=int, default=4, help="concurrent HTTP senders")
    parser.add_argument(
        "--only", default="arrow,http,json", help="(a) paths to measure: arrow,http,json"
    )
    arguments = parser.parse_args(argv)
    records = arguments.records or (20_000 if arguments.quick else 10_000_000)
    repeats = arguments.repeats or (2 if arguments.quick else 3)
    batch = arguments.arrow_batch or (2_000 if arguments.quick else 100_000)
    paths = {path.strip() for path in arguments.only.split(",") if path.strip()}
    graph_repeats = 2 if arguments.quick else 5

    with tempfile.TemporaryDirectory(prefix="palisade-flows-bench-") as scratch:
        directory = Path(scratch)
        ndjson = arguments.input or directory / "flows.ndjson"
        started = time.perf_counter()
        templates = len(_templates(arguments.seed))
        if "json" in paths and not ndjson.exists():
            write_ndjson(ndjson, records, arguments.seed)
        if "json" in paths:
            size = ndjson.stat().st_size
            _row(
                f"input: {records:,} Calico records from {templates:,} templates "
                f"({size / 1e6:,.0f} MB NDJSON, {size / records:.0f} B/record)",
                f"{time.perf_counter() - started:.1f} s",
            )
        files: list[Path] = []
        if paths & {"arrow", "http"}:
            started = time.perf_counter()
            files = write_arrow_batches(directory / "arrow", records, arguments.seed, batch)
            size = sum(path.stat().st_size for path in files)
            _row(
                f"input: the same as {len(files):,} Arrow IPC batches of {batch:,} records "
                f"({size / 1e6:,.0f} MB, {size / records:.0f} B/record)",
                f"{time.perf_counter() - started:.1f} s",
            )
        where = "in memory" if arguments.memory else "file store"

        def fresh_store(name: str) -> FlowStore:
            if arguments.memory:
                return FlowStore(":memory:")
            target = directory / f"{name}.duckdb"
            for stale in (target, target.with_name(target.name + ".wal")):
                stale.unlink(missing_ok=True)
            return FlowStore(target)

        kept: FlowStore | None = None  # the store (b) queries

        def keep(store: FlowStore) -> None:
            nonlocal kept
            if kept is not None:
                kept.close()
            kept = store

        if "arrow" in paths:
            seconds: list[float] = []
            cpu: list[float] = []
            for _ in range(repeats):
                with fresh_store("arrow") as store:
                    cpu_before, started = _cpu_seconds(), time.perf_counter()
                    for path in files:
                        store.ingest_arrow(path, batch_id=f"bench/{path.stem}")
                    seconds.append(time.perf_counter() - started)
                    cpu.append(_cpu_seconds() - cpu_before)
                    assert store.count() == records
            _rate_row(
                f"(a) Arrow batches -> FlowStore.ingest_arrow, {batch:,} records each, "
                f"one transaction each ({where})",
                records,
                seconds,
                cpu,
            )
            seconds, cpu = [], []
            group = max(1, arguments.group)
            for repeat in range(repeats):
                store = fresh_store(f"grouped-{repeat}")
                cpu_before, started = _cpu_seconds(), time.perf_counter()
                for first in range(0, len(files), group):
                    outcomes = store.ingest_arrow_batches(
                        [(f"bench/{path.stem}", path) for path in files[first : first + group]]
                    )
                    assert all(not isinstance(o, Exception) for o in outcomes), outcomes
                seconds.append(time.perf_counter() - started)
                cpu.append(_cpu_seconds() - cpu_before)
                assert store.count() == records
                keep(store)
            _rate_row(
                f"(a) the same, {group} batches per transaction (the server's group commit)",
                records,
                seconds,
                cpu,
            )
        if "http" in paths and not arguments.memory:
            seconds, cpu = [], []
            for repeat in range(repeats):
                server_directory = directory / f"server-{repeat}"
                server_directory.mkdir()
                elapsed, used, stored = _send_over_http(server_directory, files, arguments.senders)
                assert stored == records, (stored, records)
                seconds.append(elapsed)
                cpu.append(used)
                shutil.rmtree(server_directory)
            _rate_row(
                f"(a) Arrow batches over HTTP -> palisade server (uvicorn, loopback), "
                f"{arguments.senders} senders (cpu: the server's)",
                records,
                seconds,
                cpu,
            )
        if "json" in paths:
            cpu_before, started = _cpu_seconds(), time.perf_counter()
            parsed = _parse_only(ndjson)
            elapsed = time.perf_counter() - started
            _row(
                "    reference: DuckDB's JSON reader alone (every field, nothing stored)",
                f"{parsed / elapsed:,.0f} rec/s",
                f"{elapsed:.2f} s, cpu {_cpu_seconds() - cpu_before:.1f} s",
            )
            sample, elapsed, used = _pyarrow_json(ndjson, min(records, 1_000_000))
            _row(
                f"    reference: pyarrow.json.read_json (C++, threads), first {sample:,} lines,"
                " nothing stored",
                f"{sample / elapsed:,.0f} rec/s",
                f"{elapsed:.2f} s, cpu {used:.1f} s",
            )
            seconds, cpu = [], []
            for repeat in range(repeats):
                store = fresh_store(f"json-{repeat}")
                cpu_before, started = _cpu_seconds(), time.perf_counter()
                result = store.ingest_ndjson(ndjson, batch_id="bench")
                seconds.append(time.perf_counter() - started)
                cpu.append(_cpu_seconds() - cpu_before)
                assert result.added == records and not result.malformed, result
                if kept is None or (repeat == repeats - 1 and "arrow" not in paths):
                    keep(store)
                else:
                    store.close()
            _rate_row(
                f"(a) Calico JSON lines -> FlowStore.ingest_ndjson, one file ({where})",
                records,
                seconds,
                cpu,
            )
        if kept is not None:
            store = kept
            seconds_b, graph = _median_time(store.graph, graph_repeats)
            _row(
                f"(b) service graph, namespace view ({len(graph['nodes'])} nodes, "
                f"{len(graph['edges'])} edges), median of {graph_repeats}",
                f"{seconds_b:.3f} s",
                "target < 1 s",
            )
            namespace = next(n["namespace"] for n in graph["nodes"] if n["kind"] == "namespace")
            seconds_b, expanded = _median_time(
                lambda: store.graph(expand=[namespace]), graph_repeats
            )
            _row(
                f"    the same with one namespace expanded ({len(expanded['edges'])} edges)",
                f"{seconds_b:.3f} s",
            )
            hour = BASE_TIME + DAY // 2
            seconds_b, _ = _median_time(
                lambda: store.graph(since=hour, until=hour + 3600), graph_repeats
            )
            _row("    the same over a one-hour window", f"{seconds_b:.3f} s")
            seconds_b, _ = _median_time(lambda: store.top_talkers(limit=10), graph_repeats)
            _row("    top_talkers(by=workload) over everything", f"{seconds_b:.3f} s")
            seconds_b, _ = _median_time(lambda: store.denied(limit=100), graph_repeats)
            _row("    denied() over everything", f"{seconds_b:.3f} s")
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
