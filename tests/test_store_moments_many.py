"""``Store.cohort_moments_many``: every pair from one scan equals ``cohort_moments``."""

from __future__ import annotations

import math

import pytest

from bandit.errors import InvalidInputError
from bandit.store import ClickHouseStore
from bandit.store.queries import MOMENT_PAIRS, MOMENT_SUMS
from bandit.testing.synthetic import DAY_MS, SyntheticExperiment, insert_experiment


def test_cohort_moments_many_equals_cohort_moments_per_pair(
        store: ClickHouseStore, synthetic_68: SyntheticExperiment) -> None:
    insert_experiment(store, synthetic_68)
    # mid-experiment: some horizons complete for part of the units, day 30 for few
    for as_of in (synthetic_68.end_ms, synthetic_68.end_ms - 20 * DAY_MS):
        many = store.cohort_moments_many("exp-68", None, as_of)
        assert len(many) == len(MOMENT_PAIRS) * many["variant"].nunique()
        for metric, cov in MOMENT_PAIRS:
            got = many[(many["metric"] == metric) & (many["covariate"] == cov)]
            got = got.set_index("variant")
            want = store.cohort_moments("exp-68", metric, cov, as_of).set_index("variant")
            assert list(got.index) == sorted(want.index)
            for col in ("n_exposed", "n"):
                assert got[col].to_dict() == want[col].to_dict(), (metric, col)
            for col in MOMENT_SUMS:
                for v in want.index:
                    assert math.isclose(got.loc[v, col], want.loc[v, col],
                                        rel_tol=1e-9, abs_tol=1e-9), (metric, cov, col, v)


def test_cohort_moments_many_rejects_unknown_pair(store: ClickHouseStore) -> None:
    with pytest.raises(InvalidInputError):
        store.cohort_moments_many("exp", [("nope", "pre_engagement")])
