"""The lab: a Kubernetes-like cluster of network namespaces on one machine, enforced for real.

:func:`up` builds a lab from ordinary manifests (Namespace, Pod, Deployment and policies): a
SQLite datastore in the lab's state directory, a node namespace per node (IP forwarding on)
with its agent (``python -m palisade.agent``) programming nftables there, and per pod a network
namespace attached by the real CNI plugin (``palisade-cni ADD`` run inside the node namespace,
address from an IPPool — 10.244.0.0/16, blocks of /26, unless the manifests bring one) and a
real TCP/UDP echo server (:mod:`palisade.lab._server`) on each declared container port.
Deployments (and StatefulSets, ReplicaSets) become pods ``<name>-<i>``, named and labelled as
:class:`palisade.policy.Cluster` names them, so the engine's matrix and the lab's line up.
``up`` returns once every agent reports the store's latest revision programmed.

:func:`probe` makes real connection attempts (TCP connect, UDP echo; 1 s timeout) from inside
every pod to every pod and returns the JSON shape of ``palisade policy matrix --format json``;
:func:`status`, :func:`exec_command` and :func:`documents` look into a running lab.

Everything lives under one state directory (``/run/palisade/lab`` or ``$PALISADE_LAB_DIR``)
whose ``state.json`` lists every namespace, process (PID and start time) and file; the entry is
written *before* the object is made, so :func:`down` — which kills the processes (and any
other process left in one of the lab's namespaces), deletes each node's nftables table, the
namespaces (their veths go with them), the files and the state — also cleans up after an
``up`` that was killed. Names: namespaces ``pal-l<id>-<node>`` and ``pal-l<id>-p<n>``.

While a lab is up, ``palisade apply|get|delete`` act on its datastore when
``PALISADE_DATASTORE`` holds the URL ``lab up`` prints (``export PALISADE_DATASTORE=…``; it
is also in ``state.json`` and in ``lab status``); agents follow the changes. Policies,
Namespaces (labels) and the like can be applied so; re-applying a Pod manifest replaces the
stored Pod, including the address the CNI plugin recorded in its status, so the pod drops out
of policy until the lab is rebuilt (a ``kubectl apply``-style merge is left to ``apply``).

Left to others: more than one node (VXLAN between node namespaces), client traffic loops,
commands from manifests instead of echo servers, and ``make demo``.
"""

from ._lab import (
    DEFAULT_POOL,
    DEFAULT_STATE_DIR,
    DownReport,
    LabError,
    check_lab_id,
    container_ports,
    documents,
    down,
    exec_command,
    expand_pods,
    lab_prefix,
    load_manifests,
    parse_probe,
    probe,
    require,
    status,
    up,
    wait_programmed,
)
from ._state import LabState, PodRecord, ProcessRecord

__all__ = [
    "DEFAULT_POOL",
    "DEFAULT_STATE_DIR",
    "DownReport",
    "LabError",
    "LabState",
    "PodRecord",
    "ProcessRecord",
    "check_lab_id",
    "container_ports",
    "documents",
    "down",
    "exec_command",
    "expand_pods",
    "lab_prefix",
    "load_manifests",
    "parse_probe",
    "probe",
    "require",
    "status",
    "up",
    "wait_programmed",
]
