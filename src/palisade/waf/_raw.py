"""Values handed to libinjection as raw bytes (kept out of the mypyc-compiled modules: a
compiled class cannot subclass ``str``)."""

from __future__ import annotations


class _RawBytes(str):
    """A ``str`` whose ``encode()`` yields its code points as bytes.

    The libinjection binding encodes its argument as UTF-8; v3 hands libinjection the raw
    bytes, so values with bytes ≥ 0x80 go through this wrapper to keep them single bytes.
    """

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return str.encode(self, "latin-1")


def raw(value: str) -> str:
    return value if value.isascii() else _RawBytes(value)
