"""libnftables in process: a ctypes binding and a thread that runs it inside a namespace.

``nft`` is a thin command line around the system's ``libnftables.so.1``; calling the library
directly saves a process spawn (and ``ip netns exec``) per transaction. Only what the nftables
driver needs is bound: a context, JSON output, buffered output and errors, and
``nft_run_cmd_from_buffer`` — which parses JSON input when the JSON output flag is set, and
falls back to nft's own syntax otherwise, exactly as ``nft -j`` does.

libnftables talks netlink through a socket it opens when the context is created, and a socket
belongs to the network namespace of the thread that opened it. So a :class:`LibnftSession` owns
one thread that enters its namespace once (``setns(2)``, which moves only the calling thread),
then creates the context and runs every command of that session, one at a time.

Left to others: what to send and how to read the answer (``_nftables``).
"""

from __future__ import annotations

import ctypes
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import lru_cache

from ._netns import netns_path

LIBRARY = "libnftables.so.1"
NFT_CTX_DEFAULT = 0
"""``nft_ctx_new`` flags: the default context (with a netlink socket)."""
NFT_CTX_OUTPUT_JSON = 1 << 4
"""The only output flag ``nft -j`` sets: print JSON, and parse JSON input."""
CLONE_NEWNET = 0x40000000

# The library keeps some state per process (its interface cache, GMP and xtables set-up), so
# calls from different sessions are serialised. One agent has one session; this costs nothing.
_LIBRARY_LOCK = threading.Lock()


class LibnftablesUnavailable(Exception):
    """``libnftables.so.1`` cannot be loaded or lacks a function this binding needs."""


@dataclass(frozen=True, slots=True)
class NftResult:
    """What one ``nft_run_cmd_from_buffer`` call returned and printed."""

    status: int
    output: str
    error: str


@dataclass(frozen=True, slots=True)
class _Library:
    """The bound functions, argument and result types declared."""

    ctx_new: Callable[[int], int | None]
    ctx_free: Callable[[int], None]
    output_set_flags: Callable[[int, int], None]
    buffer_output: Callable[[int], int]
    buffer_error: Callable[[int], int]
    get_output_buffer: Callable[[int], bytes | None]
    get_error_buffer: Callable[[int], bytes | None]
    run_cmd_from_buffer: Callable[[int, bytes], int]


@lru_cache(maxsize=1)
def load_library() -> _Library:
    """Load and bind ``libnftables.so.1`` once; :class:`LibnftablesUnavailable` if it fails."""
    try:
        lib = ctypes.CDLL(LIBRARY)  # CDLL drops the GIL during calls
        ctx_new = lib.nft_ctx_new
        ctx_free = lib.nft_ctx_free
        output_set_flags = lib.nft_ctx_output_set_flags
        buffer_output = lib.nft_ctx_buffer_output
        buffer_error = lib.nft_ctx_buffer_error
        get_output_buffer = lib.nft_ctx_get_output_buffer
        get_error_buffer = lib.nft_ctx_get_error_buffer
        run_cmd_from_buffer = lib.nft_run_cmd_from_buffer
    except (OSError, AttributeError) as exc:
        raise LibnftablesUnavailable(f"{LIBRARY}: {exc}") from exc
    context = ctypes.c_void_p
    ctx_new.argtypes, ctx_new.restype = [ctypes.c_uint32], context
    ctx_free.argtypes, ctx_free.restype = [context], None
    output_set_flags.argtypes, output_set_flags.restype = [context, ctypes.c_uint], None
    for buffer in (buffer_output, buffer_error):
        buffer.argtypes, buffer.restype = [context], ctypes.c_int
    for getter in (get_output_buffer, get_error_buffer):
        getter.argtypes, getter.restype = [context], ctypes.c_char_p  # copied into bytes
    run_cmd_from_buffer.argtypes = [context, ctypes.c_char_p]
    run_cmd_from_buffer.restype = ctypes.c_int
    return _Library(
        ctx_new,
        ctx_free,
        output_set_flags,
        buffer_output,
        buffer_error,
        get_output_buffer,
        get_error_buffer,
        run_cmd_from_buffer,
    )


def available() -> bool:
    """Whether libnftables can be used in this process."""
    try:
        load_library()
    except LibnftablesUnavailable:
        return False
    return True


class NftContext:
    """One libnftables context with JSON output and buffered output and errors.

    Not thread-safe, and bound to the network namespace of the thread that created it.
    """

    def __init__(self, library: _Library) -> None:
        self._lib = library
        with _LIBRARY_LOCK:
            handle = library.ctx_new(NFT_CTX_DEFAULT)
        if not handle:
            raise LibnftablesUnavailable("nft_ctx_new failed")
        self._handle: int | None = handle
        library.output_set_flags(handle, NFT_CTX_OUTPUT_JSON)
        if library.buffer_output(handle) != 0 or library.buffer_error(handle) != 0:
            self.close()
            raise LibnftablesUnavailable("cannot buffer libnftables output")

    def run(self, command: str) -> NftResult:
        """Run ``command`` (a JSON document or nft syntax) as ``nft -j`` would."""
        handle = self._handle
        if handle is None:
            raise RuntimeError("the libnftables context is closed")
        with _LIBRARY_LOCK:
            status = self._lib.run_cmd_from_buffer(handle, command.encode())
            # Reading a buffer also rewinds it for the next command.
            output = self._lib.get_output_buffer(handle) or b""
            error = self._lib.get_error_buffer(handle) or b""
        return NftResult(status, output.decode(errors="replace"), error.decode(errors="replace"))

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            with _LIBRARY_LOCK:
                self._lib.ctx_free(handle)


def enter_netns(name: str) -> None:
    """Move the calling thread (only it) into the named network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    path = netns_path(name)
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(descriptor, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns: {os.strerror(code)}", path)
    finally:
        os.close(descriptor)


_Job = tuple[str, "Future[NftResult]"]


class LibnftSession:
    """A thread of its own, in namespace ``netns`` (``None``: the namespace of the thread
    that creates the session), holding one libnftables context and running commands on it in
    the order they are submitted.

    :meth:`close` ends the thread and frees the context; a session nobody closes ends when it
    is garbage collected (the thread holds no reference to it). Raises
    :class:`LibnftablesUnavailable` or ``OSError`` (no such namespace) when it cannot start.
    """

    def __init__(self, netns: str | None) -> None:
        library = load_library()
        self.netns = netns
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        started: Future[None] = Future()
        self._thread = threading.Thread(
            target=_serve,
            args=(library, netns, self._jobs, started),
            name=f"palisade-libnftables-{netns or 'here'}",
            daemon=True,  # an unclosed session must not keep the interpreter from exiting
        )
        self._thread.start()
        try:
            started.result()
        except BaseException:
            self._thread.join()
            raise
        self._closed = False

    def submit(self, command: str) -> Future[NftResult]:
        """Queue ``command``; the future gives its :class:`NftResult`."""
        if self._closed:
            raise RuntimeError("the libnftables session is closed")
        future: Future[NftResult] = Future()
        self._jobs.put((command, future))
        return future

    def run(self, command: str, timeout: float | None = None) -> NftResult:
        """Run ``command`` and wait for it (``TimeoutError`` after ``timeout`` seconds; the
        command still runs to its end, and later commands wait behind it)."""
        return self.submit(command).result(timeout)

    def thread_id(self) -> int | None:
        """The worker's native thread id (for ``/proc/self/task/<id>/ns/net``)."""
        return self._thread.native_id

    def close(self) -> None:
        """Finish the queued commands, free the context and end the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __del__(self) -> None:
        # Only stop the thread: a finaliser must not block on a join.
        if not getattr(self, "_closed", True):
            self._closed = True
            self._jobs.put(None)


def _serve(
    library: _Library,
    netns: str | None,
    jobs: queue.SimpleQueue[_Job | None],
    started: Future[None],
) -> None:
    try:
        if netns is not None:
            enter_netns(netns)
        context = NftContext(library)
    except BaseException as exc:  # handed to the creating thread
        started.set_exception(exc)
        return
    started.set_result(None)
    try:
        while (job := jobs.get()) is not None:
            command, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(context.run(command))
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)
    finally:
        context.close()


__all__ = [
    "NFT_CTX_OUTPUT_JSON",
    "LibnftSession",
    "LibnftablesUnavailable",
    "NftContext",
    "NftResult",
    "available",
    "enter_netns",
    "load_library",
]
