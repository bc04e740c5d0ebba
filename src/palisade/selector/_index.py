"""An incremental index of which selectors match which labelled objects.

Many keys (endpoints, network sets) carry exactly the same labels, typically every pod of
one deployment. So keys are grouped by their frozen label set, and each selector is
evaluated once per distinct label set rather than once per key: a new label set costs one
evaluation per selector, a changed selector one evaluation per distinct label set, and a
key moving to a label set that already exists costs no evaluation at all.

Callbacks fire exactly on changes, stops before starts, and every start is eventually
matched by one stop if the key or the selector is removed. They must not call back into
the index.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeAlias, TypeVar

from palisade.selector._selector import Selector

K = TypeVar("K", bound=Hashable)

MatchCallback: TypeAlias = Callable[[Hashable, K], None]
_LabelSetKey: TypeAlias = frozenset[tuple[str, str]]


@dataclass(eq=False, slots=True)
class _LabelSet(Generic[K]):
    """One distinct label set: the keys that carry it and the selectors it satisfies."""

    frozen: _LabelSetKey
    labels: dict[str, str]
    keys: set[K] = field(default_factory=set)
    selector_ids: set[Hashable] = field(default_factory=set)


def _ignore(sel_id: Hashable, key: object) -> None:
    pass


class LabelIndex(Generic[K]):
    """Tracks, for every selector and every labelled key, whether the selector matches."""

    def __init__(
        self,
        on_match_started: MatchCallback[K] | None = None,
        on_match_stopped: MatchCallback[K] | None = None,
    ) -> None:
        self._on_match_started: MatchCallback[K] = on_match_started or _ignore
        self._on_match_stopped: MatchCallback[K] = on_match_stopped or _ignore
        self._selectors: dict[Hashable, Selector] = {}
        self._label_sets: dict[_LabelSetKey, _LabelSet[K]] = {}
        self._key_to_label_set: dict[K, _LabelSet[K]] = {}
        self._selector_to_label_sets: dict[Hashable, set[_LabelSet[K]]] = {}
        self._selector_to_keys: dict[Hashable, set[K]] = {}

    def update_labels(self, key: K, labels: Mapping[str, str] | None) -> None:
        """Set the labels of ``key``; ``None`` removes the key."""
        old = self._key_to_label_set.get(key)
        new = None if labels is None else self._label_set_for(labels)
        if old is new:
            return
        empty: set[Hashable] = set()
        old_ids = old.selector_ids if old is not None else empty
        new_ids = new.selector_ids if new is not None else empty
        if old is not None:
            old.keys.discard(key)
            del self._key_to_label_set[key]
        if new is not None:
            new.keys.add(key)
            self._key_to_label_set[key] = new
        for sel_id in old_ids - new_ids:
            self._selector_to_keys[sel_id].discard(key)
            self._on_match_stopped(sel_id, key)
        for sel_id in new_ids - old_ids:
            self._selector_to_keys[sel_id].add(key)
            self._on_match_started(sel_id, key)
        if old is not None and not old.keys:
            self._drop_label_set(old)

    def update_selector(self, sel_id: Hashable, selector: Selector | None) -> None:
        """Add, change or (with ``None``) remove the selector known as ``sel_id``."""
        current = self._selectors.get(sel_id)
        if current == selector:
            return
        old_sets = self._selector_to_label_sets.pop(sel_id, set())
        self._selector_to_keys.pop(sel_id, None)
        new_sets: set[_LabelSet[K]] = set()
        if selector is None:
            del self._selectors[sel_id]
        else:
            self._selectors[sel_id] = selector
            match = selector.matcher
            new_sets = {
                label_set for label_set in self._label_sets.values() if match(label_set.labels)
            }
            self._selector_to_label_sets[sel_id] = new_sets
            self._selector_to_keys[sel_id] = {
                key for label_set in new_sets for key in label_set.keys
            }
        for label_set in old_sets - new_sets:
            label_set.selector_ids.discard(sel_id)
            for key in label_set.keys:
                self._on_match_stopped(sel_id, key)
        for label_set in new_sets - old_sets:
            label_set.selector_ids.add(sel_id)
            for key in label_set.keys:
                self._on_match_started(sel_id, key)

    def matching(self, sel_id: Hashable) -> frozenset[K]:
        """Keys the selector ``sel_id`` currently matches (empty if it is unknown)."""
        return frozenset(self._selector_to_keys.get(sel_id, ()))

    def selectors_matching(self, key: K) -> frozenset[Hashable]:
        """IDs of the selectors that currently match ``key`` (empty if it is unknown)."""
        label_set = self._key_to_label_set.get(key)
        return frozenset(label_set.selector_ids) if label_set is not None else frozenset()

    def _label_set_for(self, labels: Mapping[str, str]) -> _LabelSet[K]:
        frozen = frozenset(labels.items())
        label_set = self._label_sets.get(frozen)
        if label_set is None:
            label_set = _LabelSet(frozen, dict(labels))
            for sel_id, selector in self._selectors.items():
                if selector.matcher(label_set.labels):
                    label_set.selector_ids.add(sel_id)
                    self._selector_to_label_sets[sel_id].add(label_set)
            self._label_sets[frozen] = label_set
        return label_set

    def _drop_label_set(self, label_set: _LabelSet[K]) -> None:
        for sel_id in label_set.selector_ids:
            self._selector_to_label_sets[sel_id].discard(label_set)
        del self._label_sets[label_set.frozen]
