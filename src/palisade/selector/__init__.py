"""Calico's label-selector language: parse, print, compare and evaluate selectors.

This package implements spec section 1 exactly: the lexer and grammar (including Calico's
quirks, such as operator words that are also valid labels), the canonical string form used
for equality and unique IDs, label-prefix rewriting, and fast evaluation against label
maps through a compiled matcher. :class:`LabelIndex` keeps selector-to-key matches up to
date incrementally.

It leaves to others which labels an endpoint carries (profiles, namespace labels, spec
1.11), which selector goes in which field and the per-field validation rules (1.10), and
how policies combine selectors (4.4, 4.5); :meth:`Selector.with_label_prefix`,
:meth:`Selector.replace_calls` and :func:`and_selectors` are the building blocks for that.
"""

from palisade.selector._errors import SelectorError
from palisade.selector._index import LabelIndex
from palisade.selector._selector import ALL, Selector, and_selectors, normalise, parse

__all__ = [
    "ALL",
    "LabelIndex",
    "Selector",
    "SelectorError",
    "and_selectors",
    "normalise",
    "parse",
]
