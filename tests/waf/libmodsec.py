"""libmodsecurity3 in process (ctypes over its C API), as a reference for differential tests.

Only what the tests need: load SecLang text and files, run one transaction through the
phases the nginx connector drives, and collect what the library writes to its server log
(plus the intervention's log line, which nginx writes when it interrupts).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from collections.abc import Sequence
from typing import Any

_ID = re.compile(r'\[id "(\d+)"\]')
_LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


class _Intervention(ctypes.Structure):
    _fields_ = [
        ("status", ctypes.c_int),
        ("pause", ctypes.c_int),
        ("url", ctypes.c_char_p),
        ("log", ctypes.c_char_p),
        ("disruptive", ctypes.c_int),
    ]


def _load() -> Any:
    try:
        lib = ctypes.CDLL("libmodsecurity.so.3")
    except OSError:
        return None
    p, s, i, n = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t
    lib.msc_init.restype = p
    lib.msc_create_rules_set.restype = p
    lib.msc_new_transaction.restype = p
    lib.msc_new_transaction.argtypes = [p, p, p]
    lib.msc_rules_add.argtypes = [p, s, ctypes.POINTER(s)]
    lib.msc_rules_add_file.argtypes = [p, s, ctypes.POINTER(s)]
    lib.msc_process_connection.argtypes = [p, s, i, s, i]
    lib.msc_process_uri.argtypes = [p, s, s, s]
    lib.msc_add_n_request_header.argtypes = [p, s, n, s, n]
    lib.msc_add_n_response_header.argtypes = [p, s, n, s, n]
    lib.msc_append_request_body.argtypes = [p, s, n]
    lib.msc_append_response_body.argtypes = [p, s, n]
    lib.msc_process_response_headers.argtypes = [p, i, s]
    for name in (
        "msc_process_request_headers",
        "msc_process_request_body",
        "msc_process_response_body",
        "msc_process_logging",
        "msc_transaction_cleanup",
        "msc_rules_cleanup",
    ):
        getattr(lib, name).argtypes = [p]
    lib.msc_intervention.argtypes = [p, ctypes.POINTER(_Intervention)]
    lib.msc_set_log_cb.argtypes = [p, _LOG_CALLBACK]
    return lib


_LIB = _load()
_LINES: list[str] = []


@_LOG_CALLBACK
def _on_log(_data: Any, message: Any) -> None:
    text = ctypes.cast(message, ctypes.c_char_p).value or b""
    _LINES.append(text.decode("latin-1"))


_MSC = None
if _LIB is not None:
    _MSC = _LIB.msc_init()
    _LIB.msc_set_log_cb(_MSC, _on_log)

AVAILABLE = _LIB is not None


class Reference:
    """A libmodsecurity3 rule set."""

    def __init__(self, text: str = "", files: Sequence[str] = ()) -> None:
        assert _LIB is not None
        self._rules = _LIB.msc_create_rules_set()
        error = ctypes.c_char_p()
        if text and _LIB.msc_rules_add(self._rules, text.encode("latin-1"), error) < 0:
            raise ValueError((error.value or b"").decode())
        for path in files:
            if _LIB.msc_rules_add_file(self._rules, path.encode(), error) < 0:
                raise ValueError((error.value or b"").decode())

    def run(
        self,
        method: str,
        uri: str,
        headers: Sequence[tuple[str, str]],
        body: bytes = b"",
        response: tuple[int, Sequence[tuple[str, str]], bytes] | None = None,
    ) -> tuple[int | None, set[int], list[str]]:
        """(intervention status, logged rule ids, log lines) of one transaction."""
        assert _LIB is not None
        _LINES.clear()
        tx = _LIB.msc_new_transaction(_MSC, self._rules, None)
        status: int | None = None

        def interrupted() -> bool:
            nonlocal status
            it = _Intervention(status=200)
            if _LIB.msc_intervention(tx, ctypes.byref(it)) and it.disruptive:
                status = it.status
                if it.log:
                    _LINES.append(it.log.decode("latin-1"))
                return True
            return False

        _LIB.msc_process_connection(tx, b"127.0.0.1", 40000, b"127.0.0.1", 80)
        _LIB.msc_process_uri(tx, uri.encode("latin-1"), method.encode(), b"1.1")
        done = interrupted()
        if not done:
            for name, value in headers:
                key, val = name.encode("latin-1"), value.encode("latin-1")
                _LIB.msc_add_n_request_header(tx, key, len(key), val, len(val))
            _LIB.msc_process_request_headers(tx)
            done = interrupted()
        if not done:
            if body:
                _LIB.msc_append_request_body(tx, body, len(body))
            _LIB.msc_process_request_body(tx)
            done = interrupted()
        if not done and response is not None:
            code, response_headers, response_body = response
            for name, value in response_headers:
                key, val = name.encode("latin-1"), value.encode("latin-1")
                _LIB.msc_add_n_response_header(tx, key, len(key), val, len(val))
            _LIB.msc_process_response_headers(tx, code, b"HTTP 1.1")
            if not interrupted():
                if response_body:
                    _LIB.msc_append_response_body(tx, response_body, len(response_body))
                _LIB.msc_process_response_body(tx)
                interrupted()
        _LIB.msc_process_logging(tx)
        _LIB.msc_transaction_cleanup(tx)
        lines = list(_LINES)
        ids = {int(found) for line in lines for found in _ID.findall(line)}
        return status, ids, lines
