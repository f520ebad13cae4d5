"""The names of every file the learner and the servers share, defined once.

The learner publishes into ``model.dir`` what the servers read; both sides build
a path from the names below (or the helpers), never from a literal of their own, so the
two can never disagree on a name.

>>> from pathlib import Path
>>> snapshot_path("var/snapshots") == Path("var/snapshots") / SNAPSHOT_NAME
True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = [
    "CALIBRATION_NAME",
    "PRIOR_NAME",
    "PROJECTION_NAME",
    "REGISTRY_LOCK_NAME",
    "REGISTRY_NAME",
    "SNAPSHOT_NAME",
    "calibration_path",
    "prior_path",
    "projection_path",
    "registry_path",
    "snapshot_path",
]

#: the model the learner publishes (atomic rename) and every server reloads
SNAPSHOT_NAME: Final = "policy.snapshot"
#: the learner's prior, kept in ``learner.state_dir`` beside the partition state files
PRIOR_NAME: Final = "prior.snapshot"
#: the arm registry file (:mod:`bandit.formats.registry`) in ``model.dir``
REGISTRY_NAME: Final = "arms-registry.json"
#: the ``flock`` file that serialises writers of the arm registry
REGISTRY_LOCK_NAME: Final = REGISTRY_NAME + ".lock"
#: the fitted MiniLM projection (:mod:`bandit.adapters.minilm`) in ``model.dir``
PROJECTION_NAME: Final = "projection.snapshot"
#: the published reward calibration history (:mod:`bandit.formats.calibration`) in
#: ``model.dir``; its writers' ``flock`` file is this name + ``.lock``
CALIBRATION_NAME: Final = "reward-calibration.json"


def snapshot_path(model_dir: str | os.PathLike[str]) -> Path:
    """``<model_dir>/policy.snapshot``: the published model."""
    return Path(model_dir) / SNAPSHOT_NAME


def prior_path(state_dir: str | os.PathLike[str]) -> Path:
    """``<state_dir>/prior.snapshot``: the learner's prior."""
    return Path(state_dir) / PRIOR_NAME


def registry_path(model_dir: str | os.PathLike[str]) -> Path:
    """``<model_dir>/arms-registry.json``: the shared arm registry."""
    return Path(model_dir) / REGISTRY_NAME


def projection_path(model_dir: str | os.PathLike[str]) -> Path:
    """``<model_dir>/projection.snapshot``: the MiniLM projection."""
    return Path(model_dir) / PROJECTION_NAME


def calibration_path(model_dir: str | os.PathLike[str]) -> Path:
    """``<model_dir>/reward-calibration.json``: the published reward α's."""
    return Path(model_dir) / CALIBRATION_NAME
