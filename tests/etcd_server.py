"""A real etcd on loopback for tests: Debian's etcd-server, on free ports, always stopped."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ETCD_BINARY = Path("/usr/bin/etcd")
_START_TIMEOUT = 30.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class EtcdServer:
    """A single-member etcd cluster on loopback, in its own data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.client_port = free_port()
        self.peer_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = data_dir.parent / f"{data_dir.name}.log"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def store_url(self, prefix: str = "/test/") -> str:
        return f"etcd://127.0.0.1:{self.client_port}{prefix}"

    def start(self) -> None:
        assert self._process is None, "etcd is already running"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        command = [
            str(ETCD_BINARY),
            "--name=test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=test={peer_url}",
            "--initial-cluster-state=new",
            "--initial-cluster-token=palisade-test",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
        ]
        # etcd also reads ETCD_* variables; a developer's own settings must not leak in.
        env = {name: value for name, value in os.environ.items() if not name.startswith("ETCD")}
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"etcd exited with status {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.client_url}/health", timeout=1) as reply:
                    if json.load(reply).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"etcd not healthy after {_START_TIMEOUT} s:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()

    def kill(self) -> None:
        """Stop etcd abruptly, as a crash would."""
        if self._process is not None:
            self._process.kill()
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _require_etcd() -> None:
    if not ETCD_BINARY.exists():
        pytest.fail(
            f"{ETCD_BINARY} is missing: `make install` installs Debian's etcd-server package "
            "(the etcd tests need a real etcd 3.4)",
            pytrace=False,
        )


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    """A running etcd, terminated and waited for after the test, whatever its outcome."""
    _require_etcd()
    server = EtcdServer(tmp_path / "etcd-data")
    try:
        for attempt in range(3):
            try:
                server.start()
                break
            except RuntimeError:
                # Another process may have taken a port between choosing and binding it.
                if attempt == 2:
                    raise
                server = EtcdServer(tmp_path / f"etcd-data-{attempt + 1}")
        yield server
    finally:
        server.stop()
