"""Issue 4's benchmark (d): the agent's CPU cost of flow collection at 1,000 new connections/s.

    sudo .venv/bin/python bench/flow_collection_bench.py            # 3 rounds of 20 s each way
    sudo .venv/bin/python bench/flow_collection_bench.py --quick    # 1 round of 5 s

A one-node lab holds a client pod and a server pod; the client opens and closes TCP
connections to the server at a fixed rate (default 1,000/s), which walk the policy chains and
log their hits to NFLOG. The agent's CPU time (user + system, from /proc) is measured over the
load window twice in the same run — flow collection on (NFLOG reader, conntrack dumps every
interval, aggregation, an NDJSON sink) and off (the same lab, the agent without flow options)
— and printed as CPU % of one core, with the difference: the cost of collection. The rate the
client reached and the number of records written are printed too. Medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from palisade import lab

CLIENT = """
import socket, sys, time
ip, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
made = 0
start = time.monotonic()
while (now := time.monotonic()) - start < seconds:
    due = start + made / rate
    if due > now:
        time.sleep(due - now)
    try:
        with socket.create_connection((ip, 8080), timeout=1):
            pass
    except OSError:
        pass
    made += 1
print(made / (time.monotonic() - start))
"""


def _manifests() -> list[dict[str, Any]]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]},
    }
    return [
        {**pod, "metadata": {"name": "client", "namespace": "default", "labels": {"app": "c"}}},
        {**pod, "metadata": {"name": "server", "namespace": "default", "labels": {"app": "s"}}},
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "allow-app"},
            "spec": {
                "selector": "has(app)",
                "types": ["Ingress", "Egress"],
                "ingress": [{"action": "Allow", "protocol": "TCP"}],
                "egress": [{"action": "Allow"}],
            },
        },
    ]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _round(directory: Path, collect: bool, rate: float, seconds: float) -> dict[str, float]:
    state_dir = directory / f"lab-{secrets.token_hex(3)}"
    (directory / "m.yaml").write_text(yaml.safe_dump_all(_manifests()))
    try:
        state = lab.up(
            [directory / "m.yaml"],
            state_dir=state_dir,
            lab_id=f"f{secrets.token_hex(3)}",
            nodes=1,
            flows=lab.FlowSettings(interval=5.0, enabled=collect),
        )
        agent = next(p.pid for p in state.processes if p.role == "agent")
        server_ip = str(state.pods["default/server"].ip)
        before = _cpu_seconds(agent)
        started = time.monotonic()
        completed = subprocess.run(
            lab.exec_command(
                "default/client",
                [sys.executable, "-c", CLIENT, server_ip, str(rate), str(seconds)],
                state_dir,
            ),
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
        elapsed = time.monotonic() - started
        used = _cpu_seconds(agent) - before
        time.sleep(6.0)  # the last interval's records
        records = sum(
            len(path.read_text().splitlines())
            for path in lab.flow_log_files(state)
            if path.exists()
        )
        return {
            "cpu_percent": 100.0 * used / elapsed,
            "rate": float(completed.stdout.strip() or 0),
            "records": float(records),
        }
    finally:
        lab.down(state_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round")
    parser.add_argument("--rate", type=float, default=1000.0, help="new connections per second")
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    rounds, seconds = (1, 5.0) if arguments.quick else (3, 20.0)
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="palisade-flowbench-") as temporary:
        for _ in range(rounds):
            for collect in (False, True):
                results[collect].append(_round(Path(temporary), collect, arguments.rate, seconds))
    on = statistics.median(r["cpu_percent"] for r in results[True])
    off = statistics.median(r["cpu_percent"] for r in results[False])
    rate = statistics.median(r["rate"] for r in results[True])
    records = statistics.median(r["records"] for r in results[True])
    print(f"(d) flow collection at {rate:,.0f} new connections/s ({rounds} x {seconds:g} s):")
    print(f"    agent CPU with collection   {on:6.1f} % of one core (median)")
    print(f"    agent CPU without           {off:6.1f} %")
    print(f"    cost of collection          {on - off:6.1f} % of one core")
    print(f"    records written per round   {records:,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
