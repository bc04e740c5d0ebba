"""Test-session settings shared by every package's tests."""

from __future__ import annotations

import os

from hypothesis import settings

# `make test` (and CI) draws the same examples on every run, so a result is reproducible and a
# landing is never decided by luck; `make fuzz` explores fresh random examples.
settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("PALISADE_HYPOTHESIS", "repeatable"))
