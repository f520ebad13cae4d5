"""What a policy comparison runs (:class:`SimulationSpec`), apart from the runner that runs it.

The spec is plain validated data and imports nothing heavy, so ``switchboard simulate``
can show its defaults in ``--help`` without loading numpy, pandas or scipy (the
runner, :mod:`simulations.runner`, does; it re-exports these names).
"""

from __future__ import annotations

from dataclasses import dataclass

from bandit.errors import InvalidInputError

__all__ = ["DEFAULT_POLICIES", "SimulationSpec"]

DEFAULT_POLICIES = ("linucb", "hybrid_linucb", "linear_thompson", "greedy", "epsilon_greedy",
                    "uniform", "vw")


@dataclass(frozen=True)
class SimulationSpec:
    """What to simulate: scenario, policies, number of seeds and steps, feedback batching."""

    scenario: str = "default"
    policies: tuple[str, ...] = DEFAULT_POLICIES
    seeds: int = 4
    steps: int = 3000
    batch_size: int = 20
    steps_per_day: int = 100
    seed: int = 20261123
    world_seed: int = 0
    alpha: float = 0.3
    thompson_v: float = 0.1
    probability_floor: float = 0.01

    def __post_init__(self) -> None:
        from simulations.world import SCENARIOS  # the world (numpy, scipy) only when one runs

        if self.scenario not in SCENARIOS:
            raise InvalidInputError("scenario", self.scenario,
                                    f"must be one of {sorted(SCENARIOS)}")
        for name, v in (("seeds", self.seeds), ("steps", self.steps),
                        ("batch_size", self.batch_size), ("steps_per_day", self.steps_per_day)):
            if v < 1:
                raise InvalidInputError(name, v, "must be >= 1")
        if not self.policies:
            raise InvalidInputError("policies", self.policies, "must name at least one policy")
