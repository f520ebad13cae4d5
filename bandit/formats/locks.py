"""The exclusive lock writers of a shared file hold while they read, merge and replace it.

An advisory ``fcntl.flock`` on a lock file beside the shared one (the arm registry's
``arms-registry.json.lock``, the reward calibration's ``reward-calibration.json.lock``):
the shared file itself is replaced by an atomic rename, so it cannot carry the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["exclusive_lock"]


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, mode: int,
                   refuse: Callable[[OSError], Exception]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created with ``mode``, and its folder)
    for the block; an open that fails raises ``refuse(error)`` instead."""
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, mode)
    except OSError as exc:
        raise refuse(exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
