"""The fault-injection suite: a fast subset runs in `make test`; `make faults` (CONTRASTIVE_ALL_FAULTS=1) runs all.

Tests marked `all_faults` are skipped unless CONTRASTIVE_ALL_FAULTS=1. Every test adds what it injected and
what survived to the `figures` fixture; the totals are printed at the end of the run (and recorded by hand in
docs/reliability.md).
"""
import os
from collections import Counter

import pytest

ALL_FAULTS = os.environ.get("CONTRASTIVE_ALL_FAULTS") == "1"
FIGURES: Counter = Counter()


def pytest_configure(config):
    config.addinivalue_line("markers", "all_faults: a long fault case, run only with CONTRASTIVE_ALL_FAULTS=1")


def pytest_collection_modifyitems(config, items):
    if ALL_FAULTS:
        return
    for item in items:
        if "all_faults" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="long fault case; run with `make faults`"))


@pytest.fixture
def figures() -> Counter:
    return FIGURES


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("fault-injection figures")
        for name, count in sorted(FIGURES.items()):
            terminalreporter.write_line(f"{name}: {count}")
