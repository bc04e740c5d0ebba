"""The one exception type the selector package raises for bad selector text."""

from __future__ import annotations


class SelectorError(ValueError):
    """A selector string that Calico's parser would reject.

    ``position`` is the index (in characters of the Python string) where the problem was
    found and ``reason`` says what was expected there. Calico does not treat its error text
    as part of the contract, so neither do we; only "valid or not" is.
    """

    position: int
    reason: str

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"position {position}: {reason}")
        self.position = position
        self.reason = reason

    def __reduce__(self) -> tuple[type[SelectorError], tuple[int, str]]:
        # ValueError pickles its args, which here is the formatted message; rebuild from
        # the fields instead so a pickled error comes back identical.
        return (type(self), (self.position, self.reason))
