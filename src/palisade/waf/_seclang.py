"""SecLang reader: files → directives (name + raw arguments), with every problem collected.

The reader knows only the lexical rules of ModSecurity v3's configuration language: physical
lines joined at a trailing backslash, ``#`` comments, arguments that are bare words or
double-quoted strings (``\\"`` inside stands for ``"``; every other backslash pair is kept as
written, so regular expressions reach the operator untouched), and ``Include`` with globs
relative to the including file. What a directive means is :mod:`._rules`' business.

Problems are ``(file, line, reason)``; the reader keeps going after each one so that the
caller can report all of them at once.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

Problem = tuple[str, int, str]

_MAX_INCLUDE_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Directive:
    """One logical configuration line: ``name arg1 arg2 …`` with quotes resolved."""

    name: str
    args: tuple[str, ...]
    file: str
    line: int
    directory: Path  # folder of the file it came from (data files, includes)


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first physical line number, joined text) for every non-empty, non-comment line."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not pending:
            start = number
            stripped = line.lstrip()
            if not stripped:
                continue
            if stripped.startswith("#"):
                # A comment ends at its own line even when it ends in a backslash: the
                # CRS has commented-out rules whose continuation lines are comments too.
                continue
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        joined = "".join(pending)
        pending = []
        if joined.strip():
            yield start, joined
    if pending:
        joined = "".join(pending)
        if joined.strip():
            yield start, joined


def split_arguments(text: str) -> tuple[list[str], str | None]:
    """Split a directive line into words; returns (words, error)."""
    words: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            i += 1
            continue
        if c == '"':
            i += 1
            buf: list[str] = []
            closed = False
            while i < n:
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    nxt = text[i + 1]
                    buf.append('"' if nxt == '"' else ch + nxt)
                    i += 2
                    continue
                if ch == '"':
                    closed = True
                    i += 1
                    break
                buf.append(ch)
                i += 1
            if not closed:
                return words, "unterminated double-quoted argument"
            words.append("".join(buf))
            if i < n and text[i] not in " \t":
                return words, f"unexpected text after a quoted argument: {text[i : i + 20]!r}"
            continue
        start = i
        while i < n and text[i] not in " \t":
            i += 1
        words.append(text[start:i])
    return words, None


class SecLangReader:
    """Reads files and inline text into :class:`Directive` lists, collecting problems."""

    def __init__(self) -> None:
        self.directives: list[Directive] = []
        self.problems: list[Problem] = []
        self._stack: list[str] = []

    def read_file(self, path: Path | str, *, shown_as: str | None = None) -> None:
        path = Path(path)
        name = shown_as or str(path)
        try:
            text = path.read_bytes().decode("latin-1")
        except OSError as exc:
            self.problems.append((name, 0, f"cannot read file: {exc.strerror or exc}"))
            return
        self.read_text(text, name, path.parent)

    def read_text(self, text: str, file: str, directory: Path) -> None:
        if file in self._stack:
            self.problems.append((file, 0, "file includes itself"))
            return
        if len(self._stack) >= _MAX_INCLUDE_DEPTH:
            self.problems.append((file, 0, "Include nested too deeply"))
            return
        self._stack.append(file)
        try:
            for line_number, line in _logical_lines(text):
                words, error = split_arguments(line)
                if error is not None:
                    self.problems.append((file, line_number, error))
                    continue
                if not words:
                    continue
                name, args = words[0], tuple(words[1:])
                if name.lower() == "include":
                    self._include(args, file, line_number, directory)
                    continue
                self.directives.append(Directive(name, args, file, line_number, directory))
        finally:
            self._stack.pop()

    def _include(self, args: tuple[str, ...], file: str, line: int, directory: Path) -> None:
        if len(args) != 1:
            self.problems.append((file, line, "Include takes exactly one path"))
            return
        pattern = args[0]
        if not os.path.isabs(pattern):
            pattern = str(directory / pattern)
        matches = sorted(glob.glob(pattern))
        if not matches:
            if glob.has_magic(pattern):
                return  # an empty glob is not an error (ModSecurity accepts it too)
            self.problems.append((file, line, f"Include: no such file: {args[0]}"))
            return
        for match in matches:
            self.read_file(match)
