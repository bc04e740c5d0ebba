"""libmodsecurity3 in nginx on loopback, as a reference for differential tests.

:class:`ModSecReference` renders an nginx configuration into a private directory: a front
server on an ephemeral loopback port with ``modsecurity on`` and the rule configuration it
is given (the same files and before/after SecLang text the test gives ``WafEngine.load``),
proxying to a backend server block that answers ``200 ok`` to anything (and, when a
``reflector`` is given, ``/reflect`` to an in-process backend that builds the response from
the request, as the CRS CI's albedo does). nginx runs with its
own prefix, pid file and error log; it is stopped by the PID from that pid file (never the
system service, never ``/etc/nginx``).

Correlation. The harness adds two marker rules to the reference only: a phase-1 ``SecAction``
loaded before everything and a phase-5 ``SecAction`` loaded after everything, both
``log``. Their ids are never reported. ``modsecurity_transaction_id`` gives each
transaction the id ``pal-<client port>-<connection>-<request on connection>``, so every log
line names its connection and request. Requests go one at a time, each on its own
connection: the raw bytes are written as given, the write side is shut, the response is
read to EOF, then the error log from the offset taken before the request holds exactly
that connection's lines. A transaction without the phase-1 marker never reached
ModSecurity (nginx answered by itself); one whose phase-5 marker is missing is waited
for briefly.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

MODSEC_MODULE = Path(
    os.environ.get("MODSEC_MODULE", "/usr/lib/nginx/modules/ngx_http_modsecurity_module.so")
)
UNICODE_MAP = Path(os.environ.get("UNICODE_MAP", "/etc/nginx/unicode.mapping"))

BEGIN_MARKER_ID = 4990001
END_MARKER_ID = 4990002
MARKER_IDS = frozenset({BEGIN_MARKER_ID, END_MARKER_ID})

_BEGIN_MARKER = (
    f"SecAction \"id:{BEGIN_MARKER_ID},phase:1,pass,log,t:none,msg:'palisade-diff begin'\"\n"
)
_END_MARKER = f"SecAction \"id:{END_MARKER_ID},phase:5,pass,log,t:none,msg:'palisade-diff end'\"\n"

# Engine settings that are not rules: where libmodsecurity may write, no audit log, and the
# unicode map the CRS container's modsecurity.conf loads (the engine has it built in).
_PLATFORM = """\
SecTmpDir {tmp}
SecDataDir {tmp}
SecUploadDir {tmp}
SecAuditEngine Off
SecUnicodeMapFile {unicode_map} 20127
"""

_NGINX_CONF = """\
load_module {module};
worker_processes 1;
error_log {logs}/error.log info;
pid {logs}/nginx.pid;

events {{
    worker_connections 256;
}}

http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 64m;
    client_header_timeout 5s;
    client_body_timeout 5s;

    server {{
        listen 127.0.0.1:{port} default_server;
        server_name localhost;
        modsecurity on;
        modsecurity_rules_file {conf}/modsec-main.conf;
        modsecurity_transaction_id "pal-$remote_port-$connection-$connection_requests";
{reflect_locations}
        location / {{
            # The backend always gets the same plain request, so it always answers 200
            # whatever the client sent; the WAF has seen the original request.
            set $backend_uri /ok;
            proxy_method GET;
            proxy_pass_request_headers off;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_ignore_client_abort on;
            proxy_pass http://127.0.0.1:{backend_port}$backend_uri;
        }}
    }}

    server {{
        listen 127.0.0.1:{backend_port};
        server_name backend;
        modsecurity off;
        location / {{
            default_type text/plain;
            return 200 "ok\\n";
        }}
    }}
}}
"""

_LINE_ID = re.compile(r'\[line "\d+"\] \[id "(\d+)"\]')
_ANY_ID = re.compile(r'\[id "(\d+)"\]')
_UNIQUE_ID = re.compile(r'\[unique_id "pal-(\d+)-(\d+)-(\d+)"\]')


_REFLECT_LOCATIONS = """\
        # The reflecting backend (the CRS CI's albedo answers POST /reflect with the
        # response its JSON body describes): the request goes there as nginx proxies it.
        location = /reflect {{
            proxy_ignore_client_abort on;
            proxy_pass http://127.0.0.1:{reflect_port};
        }}
        location = /reflect/ {{
            proxy_ignore_client_abort on;
            proxy_pass http://127.0.0.1:{reflect_port};
        }}
"""

Reflector = Callable[[bytes], bytes]  # the raw request nginx proxies -> the raw response


class _ReflectHandler(socketserver.BaseRequestHandler):
    server: _ReflectServer

    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(10)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or b"0")
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
            conn.sendall(self.server.reflector(head + b"\r\n\r\n" + body[:length]))
        except (OSError, ValueError):
            return


class _ReflectServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, reflector: Reflector) -> None:
        super().__init__(("127.0.0.1", 0), _ReflectHandler)
        self.reflector = reflector


class ReferenceUnavailable(RuntimeError):
    """nginx or the ModSecurity connector module is not installed, or nginx did not start."""


@dataclass
class Transaction:
    """One ModSecurity transaction: what it logged."""

    request_number: int  # $connection_requests: 1, or 2+ for pipelined requests
    ids: set[int] = field(default_factory=set)  # logged rule ids, markers left out
    lines: list[str] = field(default_factory=list)
    clipped: int = 0  # match lines nginx clipped (2 KB) before the rule id
    began: bool = False  # the phase-1 marker logged: ModSecurity saw the request
    ended: bool = False  # the phase-5 marker logged: the transaction is complete


@dataclass
class ReferenceResult:
    """What nginx + libmodsecurity3 did with one raw request (one connection)."""

    response: bytes
    transactions: list[Transaction]
    error: str | None = None  # a transport problem (reset, timeout)

    @property
    def status(self) -> int | None:
        match = re.match(rb"HTTP/\d\.\d (\d{3})", self.response)
        return int(match.group(1)) if match else None

    @property
    def processed(self) -> bool:
        """ModSecurity ran for the (first) request."""
        return bool(self.transactions) and self.transactions[0].began

    def logged_ids(self) -> set[int]:
        """Every rule id logged on the connection (all its transactions), as go-ftw counts."""
        return {i for t in self.transactions for i in t.ids}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def require_reference() -> Path:
    """The nginx binary; :class:`ReferenceUnavailable` with a clear message otherwise."""
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None
    )
    missing = []
    if nginx is None:
        missing.append("nginx (no nginx binary on PATH or in /usr/sbin)")
    if not MODSEC_MODULE.is_file():
        missing.append(f"libnginx-mod-http-modsecurity ({MODSEC_MODULE} not found)")
    if not UNICODE_MAP.is_file():
        missing.append(f"the ModSecurity unicode map ({UNICODE_MAP} not found)")
    if missing:
        raise ReferenceUnavailable(
            "the libmodsecurity3 reference is not installed: missing "
            + "; ".join(missing)
            + ". Install it with `make system-deps` (apt: nginx libnginx-mod-http-modsecurity)."
        )
    assert nginx is not None
    return Path(nginx)


class ModSecReference:
    """nginx + libmodsecurity3 with a given rule configuration; use as a context manager."""

    def __init__(
        self,
        rule_files: Sequence[Path | str],
        *,
        before: str = "",
        after: str = "",
        workdir: Path | None = None,
        start_timeout: float = 60.0,
        reflector: Reflector | None = None,
    ) -> None:
        self.nginx = require_reference()
        self.rule_files = [Path(f).resolve() for f in rule_files]
        self.before = before
        self.after = after
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="palisade-modsec-")) if workdir is None else workdir
        self.start_timeout = start_timeout
        self.port = 0
        self.backend_port = 0
        self.pid: int | None = None
        self.reflector = reflector
        self._reflect: _ReflectServer | None = None

    # -------------------------------------------------------------- configuration

    @property
    def error_log(self) -> Path:
        return self.dir / "logs" / "error.log"

    def _render(self) -> Path:
        conf, logs, tmp = self.dir / "conf", self.dir / "logs", self.dir / "tmp"
        for folder in (conf, logs, tmp):
            folder.mkdir(parents=True, exist_ok=True)
        # Started as root, nginx's worker runs as an unprivileged user: it must reach the
        # directory and write request bodies and ModSecurity's files under tmp/.
        self.dir.chmod(0o755)
        tmp.chmod(0o1777)
        (conf / "before.conf").write_text(_BEGIN_MARKER + self.before, encoding="latin-1")
        (conf / "after.conf").write_text(self.after + "\n" + _END_MARKER, encoding="latin-1")
        (conf / "platform.conf").write_text(
            _PLATFORM.format(tmp=tmp, unicode_map=UNICODE_MAP), encoding="latin-1"
        )
        includes = [conf / "platform.conf", conf / "before.conf", *self.rule_files]
        includes.append(conf / "after.conf")
        (conf / "modsec-main.conf").write_text(
            "".join(f'Include "{path}"\n' for path in includes), encoding="latin-1"
        )
        reflect = ""
        if self._reflect is not None:
            reflect = _REFLECT_LOCATIONS.format(reflect_port=self._reflect.server_address[1])
        nginx_conf = conf / "nginx.conf"
        nginx_conf.write_text(
            _NGINX_CONF.format(
                reflect_locations=reflect,
                module=MODSEC_MODULE,
                logs=logs,
                tmp=tmp,
                conf=conf,
                port=self.port,
                backend_port=self.backend_port,
            ),
            encoding="latin-1",
        )
        return nginx_conf

    # -------------------------------------------------------------- life cycle

    def start(self) -> None:
        if self.reflector is not None and self._reflect is None:
            self._reflect = _ReflectServer(self.reflector)
            threading.Thread(target=self._reflect.serve_forever, daemon=True).start()
        last_error = ""
        for _ in range(3):  # the ephemeral ports may be taken between probe and bind
            self.port, self.backend_port = _free_port(), _free_port()
            if self.port == self.backend_port:
                continue
            nginx_conf = self._render()
            startup_log = self.dir / "logs" / "startup.log"
            command = [str(self.nginx), "-p", str(self.dir), "-e", str(startup_log)]
            command += ["-c", str(nginx_conf)]
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=self.start_timeout
            )
            if done.returncode == 0:
                self.pid = int((self.dir / "logs" / "nginx.pid").read_text().strip())
                atexit.register(self.stop)  # should the test process end without teardown
                self._wait_ready()
                return
            last_error = (done.stderr or done.stdout).strip()
            if "Address already in use" not in last_error:
                break
        raise ReferenceUnavailable(f"nginx did not start: {last_error}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ReferenceUnavailable(f"nginx did not listen on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        """Stop nginx by the PID from its pid file (graceful, then forced)."""
        pid, self.pid = self.pid, None
        if pid is None:
            return
        atexit.unregister(self.stop)
        try:
            os.kill(pid, signal.SIGQUIT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def close(self) -> None:
        self.stop()
        if self._reflect is not None:
            self._reflect.shutdown()
            self._reflect.server_close()
            self._reflect = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ModSecReference:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -------------------------------------------------------------- requests

    def send(self, raw: bytes, *, timeout: float = 15.0) -> ReferenceResult:
        """Send ``raw`` byte for byte on a new connection; the ids ModSecurity logged for it."""
        if self.pid is None:
            raise RuntimeError("the reference is not running")
        offset = self.error_log.stat().st_size
        response = bytearray()
        error: str | None = None
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
            client_port = conn.getsockname()[1]
            try:
                conn.sendall(raw)
                conn.shutdown(socket.SHUT_WR)
                while chunk := conn.recv(65536):
                    response += chunk
            except TimeoutError:
                error = "timeout"
            except OSError as exc:  # nginx may reset once it has answered an error
                error = f"{type(exc).__name__}: {exc}"
        transactions = self._transactions(offset, client_port)
        deadline = time.monotonic() + 2.0
        while any(t.began and not t.ended for t in transactions) and time.monotonic() < deadline:
            time.sleep(0.02)
            transactions = self._transactions(offset, client_port)
        return ReferenceResult(bytes(response), transactions, error)

    def _transactions(self, offset: int, client_port: int) -> list[Transaction]:
        with self.error_log.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("latin-1")
        by_number: dict[int, Transaction] = {}
        current: Transaction | None = None
        for line in text.splitlines():
            if "ModSecurity: " not in line:
                continue
            unique = _UNIQUE_ID.search(line)
            if unique is not None:
                if int(unique.group(1)) != client_port:
                    continue  # not this connection (cannot happen while requests are serial)
                number = int(unique.group(3))
                current = by_number.setdefault(number, Transaction(number))
            elif current is None:
                # nginx clips error-log lines at 2 KB, which can cut the unique id off;
                # requests are serial, so the line is this connection's.
                current = by_number.setdefault(1, Transaction(1))
            found = _LINE_ID.search(line) or _ANY_ID.search(line)
            if found is None:
                current.clipped += 1
                continue
            rule_id = int(found.group(1))
            if rule_id == BEGIN_MARKER_ID:
                current.began = True
            elif rule_id == END_MARKER_ID:
                current.ended = True
            else:
                current.ids.add(rule_id)
                current.lines.append(line)
        return [by_number[n] for n in sorted(by_number)]
