"""The lab's state file: every object the lab made, written before the object is made.

``<state dir>/state.json`` is rewritten atomically (a temporary file, then ``rename``) each
time the lab is about to create a namespace, start a process or write a file, so a ``lab up``
killed at any point leaves a record from which ``lab down`` removes everything.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


@dataclass
class ProcessRecord:
    """A process the lab started; ``start_time`` (clock ticks after boot, from
    ``/proc/PID/stat``) tells it apart from a later process that reuses the PID."""

    pid: int
    start_time: int
    role: str  # "agent", "server", "command" or "client"
    netns: str | None
    owner: str  # node name or NS/POD


@dataclass
class PodRecord:
    netns: str
    node: str
    ip: str | None = None
    ports: list[dict[str, Any]] = field(default_factory=list)  # {name, port, protocol}
    commands: list[list[str]] = field(default_factory=list)  # containers' command + args
    traffic: list[str] = field(default_factory=list)  # targets NS/NAME:PORT[/PROTO]
    traffic_interval: float = 1.0
    waf_ports: list[int] = field(default_factory=list)  # TCP ports a WAF proxy fronts


@dataclass
class LabState:
    lab_id: str
    state_dir: str
    datastore: str
    phase: str = "creating"  # creating → up
    nodes: dict[str, str] = field(default_factory=dict)  # node name → netns
    pods: dict[str, PodRecord] = field(default_factory=dict)  # NS/POD → record
    netns: list[str] = field(default_factory=list)  # every namespace, in creation order
    processes: list[ProcessRecord] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    agent_status_files: dict[str, str] = field(default_factory=dict)  # node → path
    server: str | None = None  # the URL of the lab's `palisade server`, if it runs one
    server_socket: str | None = None  # its Unix socket, reachable from the pods' namespaces

    @property
    def path(self) -> Path:
        return Path(self.state_dir) / STATE_FILE

    def save(self) -> None:
        """Write the state atomically."""
        path = self.path
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        os.replace(temporary, path)

    @classmethod
    def load(cls, state_dir: str | os.PathLike[str]) -> LabState | None:
        """The state in ``state_dir``; ``None`` when there is none (no lab, or already down)."""
        path = Path(state_dir) / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise ValueError(f"{path}: unreadable lab state: {exc}") from exc
        return cls(
            lab_id=str(data["lab_id"]),
            state_dir=str(data["state_dir"]),
            datastore=str(data["datastore"]),
            phase=str(data.get("phase", "creating")),
            nodes={str(k): str(v) for k, v in data.get("nodes", {}).items()},
            pods={str(k): PodRecord(**v) for k, v in data.get("pods", {}).items()},
            netns=[str(n) for n in data.get("netns", [])],
            processes=[ProcessRecord(**p) for p in data.get("processes", [])],
            files=[str(f) for f in data.get("files", [])],
            agent_status_files={
                str(k): str(v) for k, v in data.get("agent_status_files", {}).items()
            },
            server=data.get("server"),
            server_socket=data.get("server_socket"),
        )
