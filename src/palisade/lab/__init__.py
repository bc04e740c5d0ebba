"""The lab: a Kubernetes-like cluster of network namespaces on one machine, enforced for real.

:func:`up` builds a lab from ordinary manifests (Namespace, Pod, Deployment and policies): a
SQLite datastore in the lab's state directory; an underlay namespace with a bridge joining
``nodes`` node namespaces (``ul0``, 192.168.77.<i+1>/24, IP forwarding on), each with its agent
(``python -m palisade.agent``) programming nftables and the VXLAN overlay there from the
``Node`` documents the lab stores (underlay address, VXLAN MAC, and a tunnel address from IPAM);
per pod a network namespace attached by the real CNI plugin (``palisade-cni ADD`` run inside
its node's namespace, address from an IPPool — 10.244.0.0/16, blocks of /26, VXLAN always,
unless the manifests bring one), a real TCP/UDP echo server on each declared container port
(or the container's own ``command``), and, if the pod is annotated
:data:`TRAFFIC_ANNOTATION`, a client loop calling other workloads (:func:`traffic` sums what it
saw; ``/HTTP`` targets make HTTP requests, which the echo servers answer as a web app). A pod
annotated :data:`WAF_ANNOTATION` gets ``palisade waf proxy`` in its namespace in front of the
named ports (an nftables redirect there), following the lab datastore's WebApplicationFirewall
and reporting Security Events to the lab's server over its Unix socket. Deployments (and
StatefulSets, ReplicaSets) become pods ``<name>-<i>``, named and labelled as
:class:`palisade.policy.Cluster` names them, so the engine's matrix and the lab's line up;
pods are spread round-robin over the nodes unless ``spec.nodeName`` names one. ``up``
returns once every agent reports the store's latest revision programmed.

:func:`probe` makes real connection attempts (TCP connect, UDP exchange; 1 s timeout) from
inside every pod to every pod and returns the JSON shape of ``palisade policy matrix --format
json``; :func:`status`, :func:`exec_command` and :func:`documents` look into a running lab.

Everything lives under one state directory (``/run/palisade/lab`` or ``$PALISADE_LAB_DIR``)
whose ``state.json`` lists every namespace, process (PID and start time) and file; the entry is
written *before* the object is made, so :func:`down` — which kills the processes (and any
other process left in one of the lab's namespaces), deletes each node's nftables table, the
namespaces (their veths go with them), the files and the state — also cleans up after an
``up`` that was killed. Names: namespaces ``pal-l<id>-<node>``, ``pal-l<id>-ul`` and
``pal-l<id>-p<n>``.

While a lab is up, ``palisade apply|get|delete`` without ``--datastore`` act on its datastore
(or the URL ``lab up`` prints, in ``PALISADE_DATASTORE``); agents follow the changes, and
re-applying a Pod relabels it and keeps its address (see :mod:`palisade.resources`).
"""

from ._lab import (
    DEFAULT_POOL,
    DEFAULT_STATE_DIR,
    INTERVAL_ANNOTATION,
    TRAFFIC_ANNOTATION,
    WAF_ANNOTATION,
    DownReport,
    FlowSettings,
    LabError,
    check_lab_id,
    container_commands,
    container_ports,
    documents,
    down,
    exec_command,
    expand_pods,
    flow_log_files,
    lab_prefix,
    load_manifests,
    parse_probe,
    pod_traffic,
    probe,
    require,
    resolve_traffic,
    status,
    traffic,
    up,
    wait_programmed,
)
from ._state import LabState, PodRecord, ProcessRecord

__all__ = [
    "DEFAULT_POOL",
    "DEFAULT_STATE_DIR",
    "INTERVAL_ANNOTATION",
    "TRAFFIC_ANNOTATION",
    "WAF_ANNOTATION",
    "DownReport",
    "FlowSettings",
    "LabError",
    "LabState",
    "PodRecord",
    "ProcessRecord",
    "check_lab_id",
    "container_commands",
    "container_ports",
    "documents",
    "down",
    "exec_command",
    "expand_pods",
    "flow_log_files",
    "lab_prefix",
    "load_manifests",
    "parse_probe",
    "pod_traffic",
    "probe",
    "require",
    "resolve_traffic",
    "status",
    "traffic",
    "up",
    "wait_programmed",
]
