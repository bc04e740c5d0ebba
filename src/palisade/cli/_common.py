"""Shared pieces of the command line: loading with precise errors, specs, the console."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from palisade.lab import DEFAULT_STATE_DIR, LabState
from palisade.model import load_paths
from palisade.policy import Cluster, PolicyEngine, Probe, protocol_number

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

EXIT_INVALID = 2
"""Exit code for invalid input (as `kubectl` and `calicoctl` use for usage errors)."""

DEFAULT_DATASTORE_ENV = "PALISADE_DATASTORE"
DEFAULT_DATASTORE = "sqlite:///palisade.db"
LAB_DIR_ENV = "PALISADE_LAB_DIR"


def fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def datastore_url(explicit: str | None) -> str:
    """``--datastore``, else ``$PALISADE_DATASTORE``, else the datastore of the lab that is
    up (in ``$PALISADE_LAB_DIR`` or ``/run/palisade/lab``), else ``sqlite:///palisade.db``."""
    if explicit:
        return explicit
    if os.environ.get(DEFAULT_DATASTORE_ENV):
        return os.environ[DEFAULT_DATASTORE_ENV]
    try:
        state = LabState.load(os.environ.get(LAB_DIR_ENV) or DEFAULT_STATE_DIR)
    except (OSError, ValueError):
        state = None
    if state is not None and state.phase == "up":
        return state.datastore
    return DEFAULT_DATASTORE


def load_documents(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Load and validate files; on any problem print one line each and exit 2."""
    if not paths:
        fail("no input: give one or more files or directories with -f")
    for path in paths:
        if not path.exists():
            fail(f"{path}: no such file or directory")
    result = load_paths(list(paths))
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True)
    if result.problems:
        for problem in result.problems:
            err_console.print(str(problem), soft_wrap=True, markup=False)
        err_console.print(f"{len(result.problems)} problem(s); nothing was done")
        raise typer.Exit(EXIT_INVALID)
    return [resource.to_document() for resource in result.resources]


def build_engine(paths: Sequence[Path]) -> PolicyEngine:
    cluster = Cluster.from_documents(load_documents(paths))
    if cluster.problems:
        for problem in cluster.problems:
            err_console.print(problem, soft_wrap=True, markup=False)
        raise typer.Exit(EXIT_INVALID)
    return PolicyEngine(cluster)


@dataclass(frozen=True, slots=True)
class PortSpec:
    port: int | str
    protocol: str

    @property
    def probe(self) -> Probe:
        return Probe(self.port, protocol_number(self.protocol))

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"


def parse_port_spec(text: str) -> PortSpec:
    """``80/TCP``, ``53/UDP``, ``81/SCTP``, ``serve-80-tcp/TCP``; the protocol defaults to TCP."""
    port_text, _, protocol = text.strip().partition("/")
    protocol = (protocol or "TCP").upper()
    if protocol not in ("TCP", "UDP", "SCTP"):
        fail(f"--port {text!r}: protocol must be TCP, UDP or SCTP")
    if not port_text:
        fail(f"--port {text!r}: missing port")
    if port_text.isdigit():
        number = int(port_text)
        if not 1 <= number <= 65535:
            fail(f"--port {text!r}: port must be 1-65535")
        return PortSpec(number, protocol)
    return PortSpec(port_text, protocol)


def resolve_peer(
    engine: PolicyEngine, text: str, option: str
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``NS/POD``, a host endpoint name, or an IP address → the address the flow uses."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    endpoint = engine.cluster.endpoint(text)
    if endpoint is None or not endpoint.ips:
        known = ", ".join(sorted(e.key for e in engine.cluster.endpoints)[:10])
        fail(f"{option} {text!r}: no such pod or endpoint (known: {known}…)")
    return endpoint.ips[0]
