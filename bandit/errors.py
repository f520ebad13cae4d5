"""One exception hierarchy for Switchboard.

Every error raised on bad input names the offending field and value, so that a
caller (an HTTP client, a Kafka producer, a data scientist) can fix the input
without reading our source.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "ConfigError",
    "EventDecodeError",
    "InvalidInputError",
    "RegistryError",
    "SnapshotError",
    "StoreError",
    "SwitchboardError",
    "UnknownArmError",
]


class SwitchboardError(Exception):
    """Base class of every error Switchboard raises on purpose."""


class InvalidInputError(SwitchboardError, ValueError):
    """A value failed validation at a boundary.

    ``field`` names the input (dotted path for nested values), ``value`` is the
    offending value (kept short in the message), ``reason`` says what was expected.
    """

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field} {reason}, got {_short(value)}")


class UnknownArmError(InvalidInputError):
    """An arm id that is not in the registry (or not active where that matters)."""

    def __init__(self, arm_id: Any, field: str = "arm_id", reason: str = "is not a known arm") -> None:
        super().__init__(field, arm_id, reason)


class ConfigError(InvalidInputError):
    """A configuration value (TOML file or SWITCHBOARD_* variable) is invalid."""


class EventDecodeError(InvalidInputError):
    """An event on a topic could not be decoded or failed validation.

    ``raw`` keeps the original bytes so the event can go to the dead-letter topic intact.
    """

    def __init__(self, field: str, value: Any, reason: str, raw: bytes | None = None) -> None:
        super().__init__(field, value, reason)
        self.raw = raw


class SnapshotError(SwitchboardError):
    """A snapshot is corrupt, truncated, of the wrong version or the wrong kind."""


class RegistryError(SwitchboardError):
    """The shared arm registry file is corrupt, of the wrong version, or cannot be written."""


class StoreError(SwitchboardError):
    """The analytics store refused a query or is unreachable."""


def _short(value: Any, limit: int = 80) -> str:
    """The value as shown in an error: a path whole (up to 4 KiB, what a user must find),
    anything else cut to ``limit`` characters (a payload can be megabytes)."""
    if isinstance(value, os.PathLike) or (isinstance(value, str) and value.startswith("/")):
        limit = 4096
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
