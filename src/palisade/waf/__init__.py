"""Palisade WAF: a SecLang engine that executes the OWASP CRS as libmodsecurity3 does.

``WafEngine.load`` reads SecLang files (read → collect → compile → index, every problem
reported with file and line through :class:`WafLoadError`); ``WafEngine.evaluate`` runs one
request, and optionally its response, through phases 1-5 and returns a :class:`WafResult`
(verdict, anomaly scores, every matched rule). The engine is sans-I/O: the proxy and the
ext_authz front ends, the go-ftw runner and Security Events are built on this API.
"""

from . import _native

_native.activate(__path__)  # the compiled engine, when built from these very sources

from ._engine import RuleMatch, WafEngine, WafLoadError, WafResult  # noqa: E402
from ._http import (  # noqa: E402
    HttpParseError,
    HttpRequest,
    HttpResponse,
    parse_request,
    parse_response,
)

__all__ = [
    "HttpParseError",
    "HttpRequest",
    "HttpResponse",
    "RuleMatch",
    "WafEngine",
    "WafLoadError",
    "WafResult",
    "parse_request",
    "parse_response",
]
