"""Hyperscan prefilter for ``@rx`` patterns: one scan tells which patterns may match a value.

All patterns go into Hyperscan databases compiled with ``HS_FLAG_PREFILTER | SINGLEMATCH |
DOTALL | MULTILINE`` (block mode, byte semantics). Prefilter mode over-approximates: a pattern
Hyperscan does not report cannot match under PCRE2, so the engine runs PCRE2 only on reported
ones. Patterns Hyperscan rejects, or whose syntax PCRE2 reads differently (see
:func:`_needs_pcre`), are never compiled; their bits are in :attr:`RxAccelerator.always`.

The engine's PCRE2 switches ALT_BSUX off (``_operators.compile_pcre``), so ``\\x{hh}`` and
``\\xh`` mean what they mean to Hyperscan; ``\\u``/``\\U`` are PCRE2 errors and are kept out.

Compile time, CRS v4.28 (294 distinct patterns, 2 cores): one database 25.8 s (31.6 s with
isolating the one pattern Hyperscan refuses); 2 chunks in parallel threads 15.9 s; 4 chunks
8.1 s (7.8 s end to end); 6 and 8 chunks 8.4 and 10.7 s. Scan, one call per chunk: a 26-byte
value 14.9 µs with one database, 17.0 µs with four; a 2 KB value 296 vs 277 µs (noise). So
:data:`CHUNKS` is 4. Loading from the disk cache takes about 30-50 ms.

The Vectorscan 5.4.12 inside hyperscan 0.9.1 has false negatives of its own (see
:func:`library_defect`); prefilter mode cannot make up for them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:
    import hyperscan as _hs

    _HS: Any = _hs
except ImportError:  # pragma: no cover - hyperscan is an optional dependency
    _HS = None

__all__ = ["CHUNKS", "RxAccelerator", "available", "default_cache_dir", "library_defect"]

log = logging.getLogger("palisade.waf")

#: Number of databases the patterns are split into (compiled in parallel, scanned in turn).
CHUNKS = 4

_FORMAT = b"PALHSDB1"
# Bump when the screening below changes: it decides which patterns reach Hyperscan.
_SCREEN_VERSION = "1"
_SENTINEL = b"x" * 977 + b"("  # fails to parse with a message no real pattern gives here

# A quantifier PCRE2 (10.43+) accepts but Hyperscan reads as literal text: "{,n}" or spaces.
_RELAXED_QUANTIFIER = re.compile(r"\{[ \t]*\d*[ \t]*(?:,[ \t]*\d*[ \t]*)?\}")
_STRICT_QUANTIFIER = re.compile(r"\{\d+(?:,\d*)?\}")
# Escapes left to PCRE2: \u \U (errors without ALT_BSUX, "u"/"U" with it), \N, \p \P \X
# (property tables), \C (one code unit), \R \K \G (Hyperscan rejects them anyway).
_PCRE_ONLY_ESCAPES = frozenset("uUNpPXCRKG")


def available() -> bool:
    """True when the ``hyperscan`` module could be imported."""
    return _HS is not None


# Known false negatives of the Vectorscan 5.4.12 bundled by hyperscan 0.9.1 (VectorCamp/
# vectorscan#382, reported fixed upstream by #368): a wide repeat followed by literals and
# "\\s*" stops matching once the repeat spans enough bytes (about 20 or 54 in these probes).
# Three CRS patterns miss matches on the CRS regression corpus because of it.
_DEFECT_PROBES = (
    (rb"curl.*\|\s*python", b"curl http://xxxx:8000/ 2>&1 | python"),
    (rb"(?i)@.+=[\s\x0b]*?\([\s\x0b]*?select", b"@" + b"a" * 60 + b"=(SELECT"),
)
_defect: list[str | None] = []


def library_defect() -> str | None:
    """A description of known false negatives of the loaded library, or None if none show.

    Runs two tiny reproducers once. The engine should not trust :meth:`RxAccelerator.scan`
    for detection while this returns a string: patterns of the affected shape may be missed.
    """
    if not _defect:
        found: str | None = None
        if _HS is not None:
            for pattern, value in _DEFECT_PROBES:
                if not _reports(_compile([pattern], [0], _flags()), value):
                    found = (
                        f"hyperscan misses /{pattern.decode()}/ on {value[:40]!r}... "
                        "(VectorCamp/vectorscan#382): the prefilter can give false negatives"
                    )
                    break
        _defect.append(found)
    return _defect[0]


def _reports(database: Any, value: bytes) -> bool:
    hits: list[int] = []
    database.scan(value, match_event_handler=lambda *_: hits.append(1))
    return bool(hits)


def default_cache_dir() -> Path:
    """``$PALISADE_CACHE_DIR``, else ``$XDG_CACHE_HOME/palisade``, else ``~/.cache/palisade``."""
    explicit = os.environ.get("PALISADE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "palisade"
    return Path.home() / ".cache" / "palisade"


def _needs_pcre(pattern: str) -> bool:
    """True when ``pattern`` must not go to Hyperscan (its meaning there could differ)."""
    if not pattern or "\x00" in pattern or max(map(ord, pattern)) > 0xFF:
        return True  # empty matches everything; NUL would cut the C string
    if pattern.startswith("(*"):
        return True  # (*UTF), (*CR), … change how PCRE2 reads the whole pattern
    i = 0
    n = len(pattern)
    in_class = False
    while i < n:
        char = pattern[i]
        if char == "\\":
            if i + 1 >= n:
                return True
            escaped = pattern[i + 1]
            if escaped == "Q":  # \Q…\E is literal text: skip it whole
                end = pattern.find("\\E", i + 2)
                if end < 0:
                    return False
                i = end + 2
                continue
            if escaped in _PCRE_ONLY_ESCAPES:
                return True
            i += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
            elif char == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                i = end + 2 if end >= 0 else i + 1
                continue
        elif char == "[":
            in_class = True
            i += 1
            if pattern.startswith("^", i):
                i += 1
            if pattern.startswith("]", i):
                i += 1  # a leading "]" is a literal member
            continue
        elif char == "{":
            relaxed = _RELAXED_QUANTIFIER.match(pattern, i)
            if (
                relaxed
                and any(c.isdigit() for c in relaxed.group())
                and not _STRICT_QUANTIFIER.fullmatch(relaxed.group())
            ):
                return True
        i += 1
    return False


def _compile(expressions: Sequence[bytes], ids: Sequence[int], flags: int) -> Any:
    database = _HS.Database(mode=_HS.HS_MODE_BLOCK)
    database.compile(expressions=list(expressions), ids=list(ids), flags=flags)
    return database


def _first_rejected(expressions: Sequence[bytes], start: int, flags: int) -> int | None:
    """Position (>= start) of the first expression Hyperscan's parser rejects, or None.

    The binding does not say which expression failed. Hyperscan checks expressions in order
    and stops at the first bad one, so a batch ending in :data:`_SENTINEL` fails on the
    sentinel exactly when every earlier expression passed; a binary search needs few probes
    and never runs the (expensive) database build.
    """
    sentinel_message = _probe([_SENTINEL], flags)
    lo, hi = start, len(expressions)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _probe([*expressions[lo:mid], _SENTINEL], flags) == sentinel_message:
            lo = mid
        else:
            hi = mid
    if lo >= hi or _probe([expressions[lo], _SENTINEL], flags) == sentinel_message:
        return None
    return lo


def _probe(expressions: Sequence[bytes], flags: int) -> str:
    try:
        _compile(expressions, range(len(expressions)), flags)
    except _HS.error as error:
        return str(error)
    return ""  # pragma: no cover - the sentinel always fails


def _build_chunk(
    patterns: Sequence[tuple[int, bytes]], flags: int
) -> tuple[list[tuple[Any, list[int]]], list[int]]:
    """Databases covering ``patterns`` (index, bytes) and the indices Hyperscan refused."""
    pending = list(patterns)
    rejected: list[int] = []
    start = 0
    while pending:
        expressions = [expression for _, expression in pending]
        try:
            database = _compile(expressions, [index for index, _ in pending], flags)
        except _HS.error as error:
            bad = _first_rejected(expressions, start, flags)
            if bad is None:
                if len(pending) == 1:
                    rejected.append(pending[0][0])
                    return [], rejected
                # Not a parse-time refusal (e.g. a resource limit): split and try the halves.
                log.debug("hyperscan refused %d patterns together: %s", len(pending), error)
                half = len(pending) // 2
                first, first_rejected = _build_chunk(pending[:half], flags)
                second, second_rejected = _build_chunk(pending[half:], flags)
                return first + second, rejected + first_rejected + second_rejected
            rejected.append(pending[bad][0])
            del pending[bad]
            start = bad
            continue
        return [(database, [index for index, _ in pending])], rejected
    return [], rejected


def _split(indices: Sequence[int], patterns: Sequence[str], chunks: int) -> list[list[int]]:
    """Spread indices over ``chunks`` groups of similar total pattern length."""
    groups: list[list[int]] = [[] for _ in range(max(1, chunks))]
    loads = [0] * len(groups)
    for index in sorted(indices, key=lambda i: -len(patterns[i])):
        lightest = loads.index(min(loads))
        groups[lightest].append(index)
        loads[lightest] += len(patterns[index]) + 16
    return [sorted(group) for group in groups if group]


def _flags() -> int:
    hs = _HS
    return int(
        hs.HS_FLAG_PREFILTER | hs.HS_FLAG_SINGLEMATCH | hs.HS_FLAG_DOTALL | hs.HS_FLAG_MULTILINE
    )


def _cache_key(patterns: Sequence[str]) -> str:
    digest = hashlib.sha256()
    header = [_FORMAT.decode(), _SCREEN_VERSION, str(_HS.__version__), _flags(), "block", CHUNKS]
    digest.update(json.dumps(header).encode())
    for pattern in patterns:
        data = pattern.encode("utf-8", "surrogatepass")
        digest.update(struct.pack("<Q", len(data)))
        digest.update(data)
    return digest.hexdigest()


class RxAccelerator:
    """Hyperscan databases over ``@rx`` patterns; :meth:`scan` gives a may-match bitmask.

    Bit ``i`` of a mask stands for ``patterns[i]``. Build with :meth:`build` (blocking) or
    :meth:`start` (background thread); :meth:`scan` is safe to call from any thread.
    """

    size: int
    always: int

    def __init__(self, size: int, always: int, databases: Sequence[tuple[Any, list[int]]]) -> None:
        self.size = size
        self.always = always
        self._databases = [database for database, _ in databases]
        self._ids = [list(ids) for _, ids in databases]
        self._prototypes = [
            database.scratch if database.scratch is not None else _HS.Scratch(database)
            for database in self._databases
        ]
        self._local = threading.local()

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, patterns: Sequence[str], *, cache_dir: Path | None = None) -> RxAccelerator:
        """Compile ``patterns`` (or load them from ``cache_dir``/waf-hs/); blocks."""
        if not available():
            raise RuntimeError("hyperscan is not installed")
        patterns = list(patterns)
        path = cls._cache_path(patterns, cache_dir)
        cached = cls._load(path, len(patterns))
        if cached is not None:
            return cached
        accel = cls._compile_all(patterns)
        accel._store(path)
        return accel

    @classmethod
    def start(
        cls,
        patterns: Sequence[str],
        *,
        cache_dir: Path | None = None,
        on_ready: Callable[[RxAccelerator], None],
    ) -> threading.Thread | None:
        """Build in a daemon thread and call ``on_ready(accel)`` from it when done.

        With a usable cache entry ``on_ready`` runs at once in the caller's thread and None
        is returned. A failed build is logged and ``on_ready`` is not called.
        """
        if not available():
            raise RuntimeError("hyperscan is not installed")
        patterns = list(patterns)
        path = cls._cache_path(patterns, cache_dir)
        cached = cls._load(path, len(patterns))
        if cached is not None:
            on_ready(cached)
            return None

        def run() -> None:
            try:
                accel = cls._compile_all(patterns)
                accel._store(path)
            except Exception:
                log.exception("building the Hyperscan prefilter failed")
                return
            on_ready(accel)

        thread = threading.Thread(target=run, name="palisade-waf-hs-build", daemon=True)
        thread.start()
        return thread

    @classmethod
    def _compile_all(cls, patterns: Sequence[str]) -> RxAccelerator:
        defect = library_defect()
        if defect:
            log.warning("%s", defect)
        flags = _flags()
        always = 0
        accepted: list[int] = []
        for index, pattern in enumerate(patterns):
            if _needs_pcre(pattern):
                always |= 1 << index
            else:
                accepted.append(index)
        groups = _split(accepted, patterns, CHUNKS)
        results: list[tuple[list[tuple[Any, list[int]]], list[int]] | BaseException] = [
            ValueError("not built")
        ] * len(groups)

        def work(slot: int, group: list[int]) -> None:
            try:
                chunk = [(i, patterns[i].encode("latin-1")) for i in group]
                results[slot] = _build_chunk(chunk, flags)
            except BaseException as error:  # re-raised in the calling thread
                results[slot] = error

        threads = [
            threading.Thread(target=work, args=(slot, group), daemon=True)
            for slot, group in enumerate(groups)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        databases: list[tuple[Any, list[int]]] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            built, rejected = result
            databases.extend(built)
            for index in rejected:
                always |= 1 << index
        if always:
            log.debug("hyperscan prefilter: %d pattern(s) left to PCRE2", always.bit_count())
        return cls(len(patterns), always, databases)

    # ------------------------------------------------------------------ disk cache

    @staticmethod
    def _cache_path(patterns: Sequence[str], cache_dir: Path | None) -> Path:
        base = default_cache_dir() if cache_dir is None else cache_dir
        return base / "waf-hs" / f"{_cache_key(patterns)}.hsdb"

    @classmethod
    def _load(cls, path: Path, size: int) -> RxAccelerator | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning("cannot read Hyperscan cache %s (%s); rebuilding", path, error)
            return None
        try:
            return cls._decode(data, size)
        except Exception as error:
            log.warning("ignoring unusable Hyperscan cache %s (%s); rebuilding", path, error)
            return None

    @classmethod
    def _decode(cls, data: bytes, size: int) -> RxAccelerator:
        head = len(_FORMAT)
        if data[:head] != _FORMAT:
            raise ValueError("not a Palisade Hyperscan cache file")
        checksum, payload = data[head : head + 32], data[head + 32 :]
        if hashlib.sha256(payload).digest() != checksum:
            raise ValueError("checksum mismatch")
        (header_length,) = struct.unpack_from("<I", payload)
        header = json.loads(payload[4 : 4 + header_length])
        if header["size"] != size:
            raise ValueError("pattern count mismatch")
        offset = 4 + header_length
        databases: list[tuple[Any, list[int]]] = []
        for entry in header["databases"]:
            blob = payload[offset : offset + entry["bytes"]]
            offset += entry["bytes"]
            ids = [int(i) for i in entry["ids"]]
            if len(blob) != entry["bytes"] or any(not 0 <= i < size for i in ids):
                raise ValueError("truncated or inconsistent")
            databases.append((_HS.loadb(bytes(blob), _HS.HS_MODE_BLOCK), ids))
        return cls(size, int(header["always"], 16), databases)

    def _encode(self) -> bytes:
        blobs = [bytes(_HS.dumpb(database)) for database in self._databases]
        header = {
            "size": self.size,
            "always": format(self.always, "x"),
            "databases": [
                {"ids": ids, "bytes": len(blob)} for ids, blob in zip(self._ids, blobs, strict=True)
            ],
        }
        encoded = json.dumps(header).encode()
        payload = b"".join([struct.pack("<I", len(encoded)), encoded, *blobs])
        return _FORMAT + hashlib.sha256(payload).digest() + payload

    def _store(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".hsdb", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as stream:
                    stream.write(self._encode())
                os.replace(temporary, path)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as error:
            log.warning("cannot write Hyperscan cache %s (%s); continuing without it", path, error)

    # ------------------------------------------------------------------ scanning

    def scan(self, value: str) -> int:
        """Bitmask of the patterns that may match ``value`` (``always`` included)."""
        scratches: list[Any] | None = getattr(self._local, "scratches", None)
        if scratches is None:
            scratches = [prototype.clone() for prototype in self._prototypes]
            self._local.scratches = scratches
        hits: list[int] = []
        report = hits.append

        def on_match(pattern: int, _start: int, _end: int, _flags: int, _context: object) -> None:
            report(pattern)

        data = value.encode("latin-1")
        for database, scratch in zip(self._databases, scratches, strict=True):
            database.scan(data, match_event_handler=on_match, scratch=scratch)
        mask = self.always
        for pattern in hits:
            mask |= 1 << pattern
        return mask
