"""Network namespaces: create, delete, list, and run code or commands inside one.

Namespaces are named the way iproute2 names them: a bind mount at ``/var/run/netns/NAME``,
so ``ip netns exec NAME ...`` and pyroute2's ``IPRoute(netns=NAME)`` both find them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from pyroute2 import netns as pyroute2_netns

from palisade.dataplane.linux._model import PREFIX, NetlinkError, check_name

NETNS_RUN_DIR = "/var/run/netns"

T = TypeVar("T")


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def netns_exists(name: str) -> bool:
    """Whether a named namespace exists (its bind mount is present)."""
    return os.path.exists(netns_path(name))


def list_netns(prefix: str = PREFIX) -> list[str]:
    """Names of the named namespaces that start with ``prefix`` (``""``: all), sorted."""
    try:
        names = os.listdir(NETNS_RUN_DIR)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if name.startswith(prefix))


def create_netns(name: str) -> None:
    """Create the named namespace; :class:`NetlinkError` if it exists already.

    The caller names it; Palisade's own start with :data:`PREFIX` so :func:`sweep` finds them.
    """
    check_name("create_netns", "netns", name)
    if netns_exists(name):
        raise NetlinkError("create_netns", f"netns {name}", "already exists", 17)
    try:
        # pyroute2 forks a child that unshares and bind-mounts its namespace, so this process
        # never leaves its own.
        pyroute2_netns.create(name)
    except Exception as exc:
        raise NetlinkError(
            "create_netns", f"netns {name}", str(exc), getattr(exc, "errno", None)
        ) from exc
    if not netns_exists(name):
        raise NetlinkError("create_netns", f"netns {name}", "namespace did not appear")


def delete_netns(name: str) -> bool:
    """Delete the named namespace; ``False`` if it did not exist (idempotent).

    The kernel frees the namespace, and every link in it (the veth peers outside included),
    once no process runs in it and no socket refers to it.
    """
    check_name("delete_netns", "netns", name)
    if not netns_exists(name):
        return False
    try:
        pyroute2_netns.remove(name)
    except FileNotFoundError:
        return False
    except Exception as exc:
        raise NetlinkError(
            "delete_netns", f"netns {name}", str(exc), getattr(exc, "errno", None)
        ) from exc
    return True


def call_in_netns(name: str, function: Callable[[], T], operation: str) -> T:
    """Run ``function`` in a short-lived thread that has joined namespace ``name``.

    setns(2) moves only the calling thread, so the process and its other threads stay where
    they are, and the thread ends instead of moving back. Good for what resolves the namespace
    from the calling thread at open time: files under /proc/sys/net and new sockets. Not a hot
    path: one thread per call.
    """
    if not netns_exists(name):
        raise NetlinkError(operation, f"netns {name}", "no such namespace", 2)
    outcome: list[T] = []
    failure: list[BaseException] = []

    def joined() -> None:
        try:
            pyroute2_netns.setns(name, flags=0, fork=False)
            outcome.append(function())
        except BaseException as exc:  # handed to the calling thread below
            failure.append(exc)

    thread = threading.Thread(target=joined, name=f"palisade-netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        exc = failure[0]
        if isinstance(exc, NetlinkError):
            raise exc
        raise NetlinkError(
            operation, f"netns {name}", str(exc), getattr(exc, "errno", None)
        ) from exc
    return outcome[0]


def sysctl_path(key: str) -> str:
    """``net.ipv4.ip_forward`` or ``net/ipv4/ip_forward`` → ``/proc/sys/net/ipv4/ip_forward``.

    Dots separate levels in the dotted form, as sysctl(8) reads them; interface names with a
    dot need the slash form.
    """
    relative = key if "/" in key else key.replace(".", "/")
    if not relative or relative.startswith("/") or ".." in relative.split("/"):
        raise NetlinkError("set_sysctl", f"sysctl {key!r}", "invalid key")
    return os.path.join("/proc/sys", relative)


def write_sysctl(netns: str | None, key: str, value: str) -> None:
    path = sysctl_path(key)

    def write() -> None:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(value)

    target = f"sysctl {key} in netns {netns}" if netns else f"sysctl {key}"
    if netns is None:
        try:
            write()
        except OSError as exc:
            raise NetlinkError("set_sysctl", target, str(exc), exc.errno) from exc
        return
    call_in_netns(netns, write, "set_sysctl")


def read_sysctl(netns: str | None, key: str) -> str:
    path = sysctl_path(key)

    def read() -> str:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()

    if netns is None:
        try:
            return read()
        except OSError as exc:
            raise NetlinkError("get_sysctl", f"sysctl {key}", str(exc), exc.errno) from exc
    return call_in_netns(netns, read, "get_sysctl")


def run_in_netns(
    name: str,
    argv: Sequence[str],
    *,
    timeout: float = 30.0,
    input: str | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace ``name`` and wait for it; output captured as text.

    This shells out to ``ip netns exec``: starting a program in a namespace needs a new
    process anyway, and iproute2 also gives it the namespace's own /sys and /etc/netns
    overrides, which a hand-rolled setns-then-exec would not. It serves tests, the lab and
    ``lab exec`` — never the agent's programming path, which stays on netlink.
    ``check=True`` turns a non-zero exit into :class:`NetlinkError`.
    """
    check_name("run_in_netns", "netns", name)
    if not netns_exists(name):
        raise NetlinkError("run_in_netns", f"netns {name}", "no such namespace", 2)
    ip = shutil.which("ip") or "/usr/sbin/ip"
    command = [ip, "netns", "exec", name, *argv]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, input=input, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise NetlinkError(
            "run_in_netns", f"{list(argv)!r} in netns {name}", f"timed out after {timeout} s"
        ) from exc
    except OSError as exc:
        raise NetlinkError(
            "run_in_netns", f"{list(argv)!r} in netns {name}", str(exc), exc.errno
        ) from exc
    if check and completed.returncode != 0:
        raise NetlinkError(
            "run_in_netns",
            f"{list(argv)!r} in netns {name}",
            f"exit status {completed.returncode}: {completed.stderr.strip()}",
        )
    return completed
