"""Shared fixtures live in tests/fixtures/<area>.py, one module per owner, loaded here.

Test order, for parallel runs (``make test`` runs ``pytest -n 3 --dist loadfile
--no-loadscope-reorder``, see the Makefile): modules holding long tests (marked ``slow``,
``browser`` or ``durable``) are collected first, then ``integration`` modules, then the
rest, so the longest modules start at once and the short ones fill in around them instead
of one long module finishing the run alone. The order inside a module is kept, and
``--dist loadfile`` runs each module on one worker, so a module-scoped fixture is built
once and tests that must not overlap live in one module (tests/test_demo.py).
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.store",
]

#: markers of tests that take tens of seconds or more: their modules go first
_LONG = ("slow", "browser", "durable")


def _rank(item: pytest.Item) -> int:
    if any(item.get_closest_marker(m) for m in _LONG):
        return 0
    return 1 if item.get_closest_marker("integration") else 2


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    by_module: dict[str, list[pytest.Item]] = {}
    for item in items:
        by_module.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    rank = {m: min(_rank(i) for i in its) for m, its in by_module.items()}
    # a stable sort: same-rank modules, and the tests inside each, keep the collection order
    items[:] = [i for m in sorted(by_module, key=rank.__getitem__) for i in by_module[m]]
