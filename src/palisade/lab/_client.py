"""A pod's client loop: live traffic to other workloads, from inside the pod.

``python _client.py TARGETS LOG INTERVAL`` (run in the pod's namespace with ``ip netns exec``)
reads the file TARGETS, a JSON list of ``{"name": "api/orders-0:8080/TCP", "ip", "port",
"protocol"}``, then every ``INTERVAL`` seconds tries each target once, concurrently — a TCP
connection that sends a line and reads the echo, a UDP datagram and its echo, or (protocol
``HTTP``) an HTTP GET that must be answered 2xx — and appends
one JSON line per attempt to ``LOG``: ``{"time": <unix seconds>, "target": name, "ok":
bool}``. When the log passes :data:`MAX_LOG` bytes it is renamed to ``LOG.1`` (replacing the
previous one), so a lab left up for days keeps at most twice that per pod. Runs until killed.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

TIMEOUT = 1.0
MAX_LOG = 1 << 20
PAYLOAD = b"palisade-traffic\n"


def http_get(
    ip: str, port: int, path: str, host: str, headers: dict[str, str] | None = None
) -> int:
    """One HTTP/1.1 GET; the response's status code (0 when there is none)."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: palisade-lab/1\r\n"
        f"Accept: text/plain\r\n{extra}Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((ip, port), timeout=TIMEOUT) as conn:
        conn.sendall(request)
        answer = conn.recv(64)
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def attempt(target: dict[str, object]) -> bool:
    ip, port = str(target["ip"]), int(str(target["port"]))
    try:
        if str(target["protocol"]).upper() == "HTTP":
            host = str(target["name"]).split("/", 1)[-1].split(":", 1)[0]
            return 200 <= http_get(ip, port, "/lab/traffic?page=1", host) < 300
        if str(target["protocol"]).upper() == "UDP":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as conn:
                conn.settimeout(TIMEOUT)
                conn.connect((ip, port))
                conn.send(PAYLOAD)
                return conn.recv(64) == PAYLOAD
        with socket.create_connection((ip, port), timeout=TIMEOUT) as conn:
            conn.sendall(PAYLOAD)
            return conn.recv(64) == PAYLOAD
    except OSError:
        return False


def main(argv: list[str]) -> int:
    with open(argv[0]) as handle:
        targets = json.load(handle)
    log, interval = argv[1], float(argv[2])
    if not targets:
        return 0
    with ThreadPoolExecutor(max_workers=min(32, len(targets))) as pool:
        while True:
            started = time.time()
            results = list(pool.map(attempt, targets))
            lines = "".join(
                json.dumps({"time": round(started, 3), "target": t["name"], "ok": ok}) + "\n"
                for t, ok in zip(targets, results, strict=True)
            )
            with open(log, "a") as handle:
                handle.write(lines)
            if os.path.getsize(log) > MAX_LOG:
                os.replace(log, log + ".1")
            time.sleep(max(0.0, interval - (time.time() - started)))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
