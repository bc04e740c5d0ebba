"""Connection attempts from inside one pod: ``python _probe.py`` in its netns.

Reads a JSON list of ``[ip, protocol, port]`` on stdin (protocol ``tcp`` or ``udp``), tries
them all concurrently (bounded) and prints a JSON list of booleans in the same order, true when
policy let the attempt reach the destination pod: a TCP connection established, or refused by
the pod's kernel (RST: nothing listens there, but the SYN got through); a UDP echo back, or an
ICMP port-unreachable from the pod. Palisade's policy drops what it denies, so a denied attempt
meets silence and gives up after :data:`TIMEOUT` seconds. This is what the policy engine's
matrix answers — whether the network lets the flow through — so the two compare on every port,
served or not.
"""

from __future__ import annotations

import json
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

TIMEOUT = 1.0
CONCURRENCY = 64


def attempt(target: list[object]) -> bool:
    ip, protocol, port = str(target[0]), str(target[1]).lower(), int(str(target[2]))
    try:
        if protocol == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as conn:
                conn.settimeout(TIMEOUT)
                conn.connect((ip, port))
                conn.send(b"palisade-probe")
                return conn.recv(64) == b"palisade-probe"
        with socket.create_connection((ip, port), timeout=TIMEOUT):
            return True
    except ConnectionRefusedError:
        return True  # the destination pod answered: nothing listens, but policy let it through
    except OSError:
        return False


def main() -> int:
    targets = json.loads(sys.stdin.read() or "[]")
    if not targets:
        print("[]")
        return 0
    with ThreadPoolExecutor(max_workers=min(CONCURRENCY, len(targets))) as pool:
        results = list(pool.map(attempt, targets))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
