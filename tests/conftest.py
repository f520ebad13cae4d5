"""Shared fixtures live in tests/fixtures/<area>.py, one module per owner, loaded here."""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.store",
]
