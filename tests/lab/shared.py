"""Pieces the lab tests share: a lab kept up for a whole module, and matrix comparison."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import yaml

from palisade import lab


def module_lab(
    factory: pytest.TempPathFactory, name: str, documents: Sequence[Any], nodes: int
) -> Iterator[lab.LabState]:
    """A lab of ``documents`` over ``nodes`` nodes, for a module-scoped fixture to yield;
    always taken down after."""
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (network namespaces, nftables); CI runs as root")
    directory = factory.mktemp(name)
    (directory / "manifests.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    state_dir = directory / "state"
    try:
        yield lab.up(
            [directory / "manifests.yaml"],
            state_dir=state_dir,
            lab_id=f"{name[0]}{secrets.token_hex(3)}",
            nodes=nodes,
            timeout=60,
        )
    finally:
        lab.down(state_dir)


def off_diagonal(allowed: dict[str, dict[str, bool]]) -> dict[tuple[str, str], bool]:
    """A probe's matrix without a pod's verdict on itself (never compared: see the tests)."""
    return {(s, d): v for s, row in allowed.items() for d, v in row.items() if s != d}
