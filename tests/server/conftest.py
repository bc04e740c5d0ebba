"""A real `palisade server` process on a free loopback port, for the tests that restart it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

PALISADE = Path(sys.executable).parent / "palisade"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    """``palisade server`` on loopback, with its datastore and flow store under ``directory``."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(PALISADE),
                "server",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--datastore",
                f"sqlite:///{self.directory / 'store.db'}",
                "--flow-store",
                str(self.directory / "flows.duckdb"),
            ],
            stdout=log,
            stderr=log,
            env={k: v for k, v in os.environ.items() if k != "PALISADE_DATASTORE"},
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.directory / "server.log").read_text()[-2000:])
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "server")
    server.directory.mkdir()
    try:
        yield server
    finally:
        server.stop()
