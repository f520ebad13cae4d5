"""Shared fixtures live in tests/fixtures/<area>.py, one module per owner, loaded here.

Test order and parallel runs (``make test`` runs ``pytest -n 3 --dist loadgroup``, see the
Makefile): modules holding long tests (marked ``slow``, ``browser`` or ``durable``) are
collected first, then ``integration`` modules, then the rest, so the longest tests start
at once and the short ones fill in around them instead of one long test finishing the
run alone. The order inside a module is kept. Under pytest-xdist the tests of a module
that builds a module-scoped fixture of its own run on one worker (one ``xdist_group`` per
module), so that fixture is built once, not once per worker.
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.store",
]

#: markers of tests that take tens of seconds or more: their modules go first
_LONG = ("slow", "browser", "durable")


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist registers it too; a run without xdist must still accept the marker
    config.addinivalue_line("markers", "xdist_group(name): run these tests on one xdist worker")


def _rank(item: pytest.Item) -> int:
    if any(item.get_closest_marker(m) for m in _LONG):
        return 0
    return 1 if item.get_closest_marker("integration") else 2


def _uses_own_module_fixture(item: pytest.Item) -> bool:
    """Whether ``item`` uses a module-scoped fixture defined in its own module."""
    # pytest has no public view of an item's fixture definitions; _fixtureinfo is the one
    # plugins use (a pytest without it only loses the grouping, never a test)
    info = getattr(item, "_fixtureinfo", None)
    module = item.getparent(pytest.Module)
    if info is None or module is None:
        return False
    return any(d.scope == "module" and getattr(d, "node", None) is module
               for defs in info.name2fixturedefs.values() for d in defs)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    by_module: dict[str, list[pytest.Item]] = {}
    for item in items:
        by_module.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    rank = {m: min(_rank(i) for i in its) for m, its in by_module.items()}
    # a stable sort: same-rank modules, and the tests inside each, keep the collection order
    items[:] = [i for m in sorted(by_module, key=rank.__getitem__) for i in by_module[m]]
    grouped = {m for m, its in by_module.items() if any(_uses_own_module_fixture(i) for i in its)}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        if module in grouped and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(module))
