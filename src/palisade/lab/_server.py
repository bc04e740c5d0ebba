"""A pod's workload: TCP and UDP echo servers on the ports its manifest declares.

``python _server.py tcp/8080 udp/5353 …`` (run inside the pod's namespace with
``ip netns exec``) binds every port on all IPv4 addresses, prints ``ready`` on stdout once
all are bound, and serves until killed. TCP connections echo what they receive — unless they
open with an HTTP/1.x request line: then the server answers as a small web application
(``200`` with a short text body for every request, keep-alive), which is what a WAF in front
of the pod expects to talk to. UDP datagrams are sent back to their sender.
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import threading
from collections.abc import Sequence

_REQUEST_LINE = re.compile(rb"^[A-Z]{3,10} \S+ HTTP/1\.[01]\r?\n")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$")


def _http(connection: socket.socket, data: bytes) -> None:
    """Answer HTTP/1.x requests on ``connection`` (``data``: what arrived so far)."""
    while True:
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            more = connection.recv(65536)
            if not more:
                return
            data += more
        separator = b"\r\n\r\n" if b"\r\n\r\n" in data else b"\n\n"
        head, _, data = data.partition(separator)
        found = _CONTENT_LENGTH.search(head)
        length = int(found.group(1)) if found else 0
        while len(data) < length:
            more = connection.recv(65536)
            if not more:
                return
            data += more
        data = data[length:]
        line = head.split(b"\n", 1)[0].strip()
        body = b"ok " + line + b"\n"
        close = b"connection: close" in head.lower() or line.endswith(b"HTTP/1.0")
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            + b"Content-Length: %d\r\n" % len(body)
            + (b"Connection: close\r\n" if close else b"")
            + b"\r\n"
            + body
        )
        if close:
            return


def _echo(connection: socket.socket) -> None:
    with connection:
        try:
            first = connection.recv(4096)
            if _REQUEST_LINE.match(first):
                _http(connection, first)
                return
            data = first
            while data:
                connection.sendall(data)
                data = connection.recv(4096)
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
