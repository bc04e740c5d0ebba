"""Names several layers must agree on, in a module that imports nothing heavy (the CNI plugin,
which starts once per pod, reads them)."""

from __future__ import annotations

import hashlib


def workload_interface_name(namespace: str, name: str) -> str:
    """The host-side interface of a pod: ``pal`` + 11 hex digits (Linux allows 15 characters).

    The CNI plugin names the veth it creates with this function; the calc graph matches the
    pod's traffic by it.
    """
    digest = hashlib.sha256(f"{namespace}.{name}".encode()).hexdigest()
    return "pal" + digest[:11]
