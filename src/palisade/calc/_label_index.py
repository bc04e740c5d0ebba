"""The label index node: which selector matches which labelled object, kept current.

A thin, typed face over :class:`palisade.selector.LabelIndex` (which does the incremental work):
keys are the graph's object ids (endpoints, network sets), selector ids are strings chosen by
the caller (an IP set id, a policy id), and every change is reported through
``on_match_started`` / ``on_match_stopped`` exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

from palisade.selector import LabelIndex, Selector

MatchCallback = Callable[[str, str], None]


class SelectorIndex:
    """Selectors (by id) against labelled objects (by id), with symmetric start/stop events."""

    def __init__(self, on_match_started: MatchCallback, on_match_stopped: MatchCallback) -> None:
        self._started = on_match_started
        self._stopped = on_match_stopped
        self._index: LabelIndex[str] = LabelIndex(self._match_started, self._match_stopped)

    def _match_started(self, selector_id: Hashable, key: str) -> None:
        self._started(str(selector_id), key)

    def _match_stopped(self, selector_id: Hashable, key: str) -> None:
        self._stopped(str(selector_id), key)

    def update_labels(self, key: str, labels: Mapping[str, str] | None) -> None:
        self._index.update_labels(key, labels)

    def update_selector(self, selector_id: str, selector: Selector | None) -> None:
        self._index.update_selector(selector_id, selector)

    def matching(self, selector_id: str) -> frozenset[str]:
        return self._index.matching(selector_id)

    def selectors_matching(self, key: str) -> frozenset[str]:
        return frozenset(str(s) for s in self._index.selectors_matching(key))
