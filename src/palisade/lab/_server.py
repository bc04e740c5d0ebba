"""A pod's workload: TCP and UDP echo servers on the ports its manifest declares.

``python _server.py tcp/8080 udp/5353 …`` (run inside the pod's namespace with
``ip netns exec``) binds every port on all IPv4 addresses, prints ``ready`` on stdout once
all are bound, and serves until killed. TCP connections echo what they receive; UDP datagrams
are sent back to their sender.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Sequence


def _echo(connection: socket.socket) -> None:
    with connection:
        try:
            while data := connection.recv(4096):
                connection.sendall(data)
        except OSError:
            pass


def _serve_tcp(server: socket.socket) -> None:
    while True:
        connection, _ = server.accept()
        threading.Thread(target=_echo, args=(connection,), daemon=True).start()


def _serve_udp(server: socket.socket) -> None:
    while True:
        data, peer = server.recvfrom(4096)
        with contextlib.suppress(OSError):
            server.sendto(data, peer)


def bind(spec: str) -> tuple[socket.socket, threading.Thread]:
    """Bind ``tcp/PORT`` or ``udp/PORT``; the returned thread serves it once started."""
    protocol, _, port_text = spec.lower().partition("/")
    port = int(port_text)
    if protocol == "udp":
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("0.0.0.0", port))
        return server, threading.Thread(target=_serve_udp, args=(server,), daemon=True)
    if protocol != "tcp":
        raise ValueError(f"{spec!r}: protocol must be tcp or udp")
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(128)
    return server, threading.Thread(target=_serve_tcp, args=(server,), daemon=True)


def main(argv: Sequence[str]) -> int:
    threads = [bind(spec)[1] for spec in argv]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
