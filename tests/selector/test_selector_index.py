"""LabelIndex: incremental selector/key matching with start and stop callbacks."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.selector import LabelIndex, Selector, parse

Event = tuple[str, Hashable, str]


class Recorder:
    """Collects callbacks in order, and the match pairs they imply."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.active: set[tuple[Hashable, str]] = set()

    def started(self, sel_id: Hashable, key: str) -> None:
        assert (sel_id, key) not in self.active, "start fired twice"
        self.active.add((sel_id, key))
        self.events.append(("start", sel_id, key))

    def stopped(self, sel_id: Hashable, key: str) -> None:
        assert (sel_id, key) in self.active, "stop without start"
        self.active.discard((sel_id, key))
        self.events.append(("stop", sel_id, key))

    def take(self) -> list[Event]:
        events, self.events = self.events, []
        return sorted(events, key=repr)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def index(recorder: Recorder) -> LabelIndex[str]:
    return LabelIndex[str](recorder.started, recorder.stopped)


def test_label_changes_start_and_stop_matches(index: LabelIndex[str], recorder: Recorder) -> None:
    index.update_selector("web", parse("app == 'web'"))
    index.update_selector("not-db", parse("app != 'db'"))
    assert recorder.take() == []

    index.update_labels("pod1", {"app": "web"})
    assert recorder.take() == [("start", "not-db", "pod1"), ("start", "web", "pod1")]
    index.update_labels("pod1", {"app": "web"})  # same labels: nothing to report
    assert recorder.take() == []
    index.update_labels("pod1", {"app": "db"})
    assert recorder.take() == [("stop", "not-db", "pod1"), ("stop", "web", "pod1")]
    index.update_labels("pod1", {"app": "web", "tier": "x"})
    assert recorder.take() == [("start", "not-db", "pod1"), ("start", "web", "pod1")]
    assert index.selectors_matching("pod1") == {"web", "not-db"}
    index.update_labels("pod1", None)
    assert recorder.take() == [("stop", "not-db", "pod1"), ("stop", "web", "pod1")]
    index.update_labels("pod1", None)  # removing an unknown key is a no-op
    assert recorder.take() == []
    assert index.selectors_matching("pod1") == frozenset()
    assert index.matching("web") == frozenset()


def test_selector_changes_start_and_stop_matches(
    index: LabelIndex[str], recorder: Recorder
) -> None:
    index.update_labels("pod1", {"app": "web"})
    index.update_labels("pod2", {"app": "web"})
    index.update_labels("pod3", {"app": "db"})
    index.update_labels("host", {})
    assert recorder.take() == []

    index.update_selector("s", parse("app == 'web'"))
    assert recorder.take() == [("start", "s", "pod1"), ("start", "s", "pod2")]
    assert index.matching("s") == {"pod1", "pod2"}
    # An equal selector (same canonical form) is not a change.
    index.update_selector("s", parse("(app=='web')"))
    assert recorder.take() == []
    index.update_selector("s", parse("has(app)"))
    assert recorder.take() == [("start", "s", "pod3")]
    index.update_selector("s", parse("app in {'db'} || !has(app)"))
    assert recorder.take() == [
        ("start", "s", "host"),
        ("stop", "s", "pod1"),
        ("stop", "s", "pod2"),
    ]
    assert index.matching("s") == {"pod3", "host"}
    index.update_selector("s", None)
    assert recorder.take() == [("stop", "s", "host"), ("stop", "s", "pod3")]
    index.update_selector("s", None)
    assert recorder.take() == []
    assert index.matching("s") == frozenset()
    assert index.selectors_matching("pod3") == frozenset()


def test_stops_fire_before_starts(index: LabelIndex[str], recorder: Recorder) -> None:
    index.update_selector("a", parse("x == '1'"))
    index.update_selector("b", parse("x == '2'"))
    index.update_labels("k", {"x": "1"})
    recorder.events.clear()
    index.update_labels("k", {"x": "2"})
    assert recorder.events == [("stop", "a", "k"), ("start", "b", "k")]


def test_keys_with_equal_labels_share_one_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    index = LabelIndex[int]()
    for pod in range(100):
        index.update_labels(pod, {"app": "web", "pod-template-hash": "abc"})
    index.update_labels(1000, {"app": "db"})

    calls: list[Mapping[str, str]] = []
    compiled = parse("app == 'web'").matcher

    def counting(labels: Mapping[str, str]) -> bool:
        calls.append(labels)
        return compiled(labels)

    monkeypatch.setattr(Selector, "matcher", property(lambda self: counting))
    index.update_selector("s", parse("app == 'web'"))
    assert len(calls) == 2  # two distinct label sets, not 101 keys
    assert index.matching("s") == frozenset(range(100))
    calls.clear()
    index.update_labels(5000, {"pod-template-hash": "abc", "app": "web"})
    assert calls == []  # an existing label set costs nothing
    assert 5000 in index.matching("s")


def test_callbacks_are_optional() -> None:
    index = LabelIndex[tuple[str, str]]()
    index.update_labels(("ns", "pod"), {"a": "b"})
    index.update_selector(1, parse("a == 'b'"))
    assert index.matching(1) == {("ns", "pod")}
    assert index.selectors_matching(("ns", "pod")) == {1}


KEYS = ["k1", "k2", "k3", "k4"]
SELECTOR_IDS = ["s1", "s2", "s3"]
SELECTOR_TEXTS = [
    "a == '1'",
    "a != '1'",
    "has(b)",
    "!has(a) || b in {'1', '2'}",
    "all()",
    "a == '1' && b == '2'",
]
LABEL_SETS = [{}, {"a": "1"}, {"a": "2"}, {"b": "1"}, {"a": "1", "b": "2"}]

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("labels"), st.sampled_from(KEYS), st.none() | st.sampled_from(LABEL_SETS)
        ),
        st.tuples(
            st.just("selector"),
            st.sampled_from(SELECTOR_IDS),
            st.none() | st.sampled_from(SELECTOR_TEXTS),
        ),
    ),
    max_size=40,
)


@given(operations)
@settings(max_examples=300, deadline=None)
def test_index_agrees_with_brute_force(ops: list[tuple[str, str, object]]) -> None:
    recorder = Recorder()
    index = LabelIndex[str](recorder.started, recorder.stopped)
    labels_by_key: dict[str, dict[str, str]] = {}
    selectors: dict[str, str] = {}
    for kind, name, value in ops:
        if kind == "labels":
            if value is None:
                labels_by_key.pop(name, None)
            else:
                assert isinstance(value, dict)
                labels_by_key[name] = value
            index.update_labels(name, value)
        else:
            if value is None:
                selectors.pop(name, None)
            else:
                assert isinstance(value, str)
                selectors[name] = value
            index.update_selector(name, None if value is None else parse(value))
        expected = {
            (sel_id, key)
            for sel_id, text in selectors.items()
            for key, labels in labels_by_key.items()
            if parse(text).matches(labels)
        }
        # The callbacks alone reconstruct the current state, with no duplicates.
        assert recorder.active == expected
        for sel_id in SELECTOR_IDS:
            assert index.matching(sel_id) == {key for s, key in expected if s == sel_id}
        for key in KEYS:
            assert index.selectors_matching(key) == {s for s, k in expected if k == key}
