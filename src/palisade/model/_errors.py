"""Problems found in documents, and how validators report them with precise locations."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: A location inside a document: mapping keys (as written in the document) and list indices.
Loc = tuple[str | int, ...]

_PLAIN_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one document.

    ``document`` is the 1-based index of the document in its file (YAML documents are
    counted even when empty, so the number matches the ``---`` sections); it is 0 for
    problems with the file as a whole, such as a file that cannot be read. ``path`` is a
    dotted field path such as ``spec.ingress[0].source.selector``, or ``""`` when the
    problem concerns the whole document. ``line`` is 1-based, when known.
    """

    file: str
    document: int
    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        if self.path:
            return f"{self.file}:{self.document}: {self.path}: {self.reason}"
        return f"{self.file}:{self.document}: {self.reason}"


class ModelError(ValueError):
    """A document that does not describe a valid resource; ``problems`` lists every reason."""

    problems: list[Problem]

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid document")


def format_path(loc: Iterable[str | int]) -> str:
    """Render a location as ``spec.ingress[0].source.selector``.

    Keys that are not plain words (label keys such as ``app.kubernetes.io/name``) are
    written in brackets and quotes, so the path stays unambiguous.
    """
    out: list[str] = []
    for segment in loc:
        if isinstance(segment, int) and not isinstance(segment, bool):
            out.append(f"[{segment}]")
        elif isinstance(segment, str) and _PLAIN_SEGMENT.fullmatch(segment):
            out.append(f".{segment}" if out else segment)
        else:
            out.append(f"[{json.dumps(str(segment))}]")
    return "".join(out)


class FieldIssues(ValueError):
    """Raised by a validator to report problems at locations *below* the value it checks.

    Pydantic places an error at the location of the validator; this exception carries the
    rest of the path for each issue, and the loader joins the two. A validator that finds
    several problems reports them all at once.
    """

    issues: tuple[tuple[Loc, str], ...]

    def __init__(self, issues: Iterable[tuple[Loc, str]]) -> None:
        self.issues = tuple(issues)
        super().__init__("; ".join(f"{format_path(loc) or '.'}: {r}" for loc, r in self.issues))


class IssueCollector:
    """Collects issues during one validator run and raises them together."""

    def __init__(self) -> None:
        self.issues: list[tuple[Loc, str]] = []

    def add(self, loc: Loc, reason: str) -> None:
        self.issues.append((loc, reason))

    def raise_if_any(self) -> None:
        if self.issues:
            raise FieldIssues(self.issues)
