"""What the WAF keeps out of its mypyc-compiled modules (see ``_native.py``)."""

from __future__ import annotations


class _RawBytes(str):
    """A ``str`` whose ``encode()`` yields its code points as bytes.

    The libinjection binding encodes its argument as UTF-8; v3 hands libinjection the raw
    bytes, so values with bytes ≥ 0x80 go through this wrapper to keep them single bytes.
    (A compiled class cannot subclass ``str``.)
    """

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return str.encode(self, "latin-1")


def raw(value: str) -> str:
    return value if value.isascii() else _RawBytes(value)


def checkpoint() -> None:
    """Called by the engine before each rule. Compiled code never enters the interpreter's
    loop on its own, and only that loop runs signal handlers, delivers asynchronous
    exceptions and hands the GIL over; entering a Python function does all three. So the
    front ends' evaluation budget (SIGPROF on the loop's thread, ``PyThreadState_SetAsyncExc``
    on worker threads) preempts the compiled engine between rules, as it does the plain one."""
