"""Calibrating the reward: a surrogate index of the day-30 outcome from early proxies.

The bandit learns from per-message proxies combined as reward = Σ α_i · proxy_i / Σ α_i
(:mod:`bandit.reward`); the business goal is a user's day-30 engagement. The surrogate
index of Athey, Chetty, Imbens & Kang (2019, "The Surrogate Index: Combining Short-Term
Proxies to Estimate Long-Term Treatment Effects More Rapidly and Precisely", NBER WP
26463) is the conditional mean of the long-term outcome given the short-term surrogates,
fitted on units whose long-term outcome has been observed ("matured") and then used to
predict it for units whose outcome lies in the future.

Here, per user, the surrogates are the means over the early window (days 0 .. w-1 after
first exposure) of each normalised proxy — exactly the quantities the reward averages —
and, where present, pre-exposure covariates. :func:`calibrate` fits the *linear* index

    Y_30 ≈ β₀ + Σ_j β_j · S̄_j + γ · X_pre

with K-fold cross-fitting (each unit's index value comes from a model that did not see
it: ACIK §4, Chernozhukov et al. 2018), reports its out-of-fold R² (and that of a
non-linear learner, to show what the linear form leaves on the table), a calibration
table (binned out-of-fold prediction vs observed outcome) and the residuals. Because the
index is linear in the per-user *means* of the per-message proxies, a message's share of
its user's index is Σ_j β_j · proxy_j / n: the reward whose weights are α_j = β_j / Σ β
(negative β clipped to 0, since α's are non-negative) is the per-message contribution to
the index, up to an affine map that leaves every ranking of arms unchanged. Intervals of
β and α come from a bootstrap over users (percentile intervals).

:func:`project_lift` is the early read: the relative lift of the index between two
cohorts whose early window is complete (a projection of the day-30 lift), with an
interval that carries both the index's and the cohorts' sampling uncertainty. It is only
as good as the surrogacy assumption (the treatment moves the day-30 outcome only through
the proxies); :func:`projection_history` compares projections with matured measurements.
:func:`early_read` (the dashboard's and ``switchboard lift --projection``'s) gets the same
index and projection from sums over hash blocks of users (:meth:`Store.early_moments`)
instead of a row per user: the index is linear, so its fit needs only moments.

Bad input — too few matured users, a constant proxy, collinear proxies, NaN — raises
:class:`InvalidInputError` with a message naming the column and what to do.
docs/calibration.md has the method, its assumptions and its failure modes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from bandit.errors import InvalidInputError

__all__ = [
    "EARLY_BLOCKS",
    "HISTORY_COLUMNS",
    "MIN_UNITS",
    "PROXIES",
    "SURROGACY",
    "Calibration",
    "Projection",
    "ProjectionHistory",
    "Units",
    "calibrate",
    "early_read",
    "fill_unobserved",
    "load_units",
    "project_lift",
    "projection_history",
    "proxy_column",
]

FloatArray = npt.NDArray[np.float64]

#: the proxies of :mod:`bandit.reward`, in config order (``reward.alpha_<name>``)
PROXIES: Final = ("retry", "rating", "length")
#: fewest matured users :func:`calibrate` fits an index on
MIN_UNITS: Final = 200
#: a proxy explained by the others with R² above this is collinear with them
COLLINEAR_R2: Final = 0.999


def proxy_column(name: str) -> str:
    """Column of a units frame holding a user's early-window mean of proxy ``name``."""
    return f"proxy_{name}"


@dataclass(frozen=True)
class Calibration:
    """A fitted surrogate index and the reward weights it implies.

    ``coef`` / ``coef_ci``: β per proxy (outcome units per unit of the proxy's mean);
    ``alpha`` / ``alpha_ci``: the normalised, non-negative reward weights; ``clipped``:
    proxies whose β was negative (α set to 0: raising that proxy *lowers* the index).
    ``r2_oof``: out-of-fold R² of the linear index; ``r2_oof_flexible``: of a gradient
    boosted model on the same inputs (NaN when not computed). ``calibration``: per bin of
    the out-of-fold prediction, units, mean predicted and mean observed outcome.
    """

    outcome: str
    proxies: tuple[str, ...]
    covariates: tuple[str, ...]
    n_units: int
    folds: int
    n_bootstrap: int
    seed: int
    intercept: float
    coef: dict[str, float]
    coef_ci: dict[str, tuple[float, float]]
    covariate_coef: dict[str, float]
    alpha: dict[str, float]
    alpha_ci: dict[str, tuple[float, float]]
    clipped: tuple[str, ...]
    r2_oof: float
    r2_oof_flexible: float
    outcome_mean: float
    residual_sd: float
    residual_quantiles: dict[str, float]
    calibration: pd.DataFrame
    level: float = 0.95
    #: bootstrap draws of (intercept, β..., γ...): what :func:`project_lift` resamples
    boot_params: FloatArray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)
    #: provenance (window, experiments, as-of) for the published file
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> FloatArray:
        """(intercept, β per proxy, γ per covariate) of the full-sample fit."""
        return np.array([self.intercept, *(self.coef[p] for p in self.proxies),
                         *(self.covariate_coef[c] for c in self.covariates)])

    def reward_alphas(self) -> dict[str, float]:
        """``reward.alpha_<proxy>`` for every proxy of :data:`PROXIES` (0 for one not fitted)."""
        return {f"alpha_{p}": round(self.alpha.get(p, 0.0), 4) for p in PROXIES}

    def predict(self, units: pd.DataFrame) -> FloatArray:
        """The index (the predicted outcome) of each row of ``units``."""
        X = _design(units, self.proxies, self.covariates)
        out: FloatArray = self.intercept + X @ self.params[1:]
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready document (``switchboard calibrate --json``)."""
        return {
            "outcome": self.outcome, "proxies": list(self.proxies),
            "covariates": list(self.covariates), "n_units": self.n_units,
            "folds": self.folds, "bootstrap": self.n_bootstrap, "seed": self.seed,
            "level": self.level,
            "index": {"intercept": self.intercept, "coef": self.coef,
                      "coef_ci": {k: list(v) for k, v in self.coef_ci.items()},
                      "covariate_coef": self.covariate_coef},
            "alpha": self.alpha, "alpha_ci": {k: list(v) for k, v in self.alpha_ci.items()},
            "clipped": list(self.clipped),
            "r2_oof": _finite(self.r2_oof), "r2_oof_flexible": _finite(self.r2_oof_flexible),
            "outcome_mean": self.outcome_mean, "residual_sd": self.residual_sd,
            "residual_quantiles": self.residual_quantiles,
            "calibration": self.calibration.to_dict("records"),
            "reward": self.reward_alphas(), "meta": self.meta,
        }


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


# --------------------------------------------------------------------------- validation


def _design(units: pd.DataFrame, proxies: Sequence[str], covariates: Sequence[str]) -> FloatArray:
    cols = [proxy_column(p) for p in proxies] + list(covariates)
    missing = [c for c in cols if c not in units.columns]
    if missing:
        raise InvalidInputError("units", sorted(units.columns),
                                f"must have the columns {missing} (per-user early-window means)")
    X: FloatArray = units[cols].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(X)
    if bad.any():
        j = int(np.flatnonzero(bad.any(axis=0))[0])
        rows = np.flatnonzero(bad[:, j])
        ids = _ids(units, rows)
        raise InvalidInputError(cols[j], int(rows.size),
                                f"has NaN or infinite values for {rows.size} of {len(units)} "
                                f"users ({ids}): fill or drop those users, or leave the column out "
                                f"(--proxies), before calibrating")
    return X


def _ids(units: pd.DataFrame, rows: npt.NDArray[np.intp], k: int = 3) -> str:
    if "unit_id" in units.columns:
        names = [str(v) for v in units["unit_id"].to_numpy()[rows[:k]]]
    else:
        names = [f"row {int(r)}" for r in rows[:k]]
    return ", ".join(names) + (", ..." if rows.size > k else "")


def _too_few(n: int, outcome: str, min_units: int) -> InvalidInputError:
    return InvalidInputError(
        "units", n,
        f"are too few matured users to calibrate on: {n} have their {outcome} in the past "
        f"and an early window with messages (need >= {min_units}); wait for more users to "
        f"mature or lower --min-units")


def _constant_outcome(outcome: str, value: float, n: int) -> InvalidInputError:
    return InvalidInputError(outcome, value,
                             f"is the same for all {n} users: there is nothing to predict")


def _constant_proxy(name: str, value: float, n: int, outcome: str) -> InvalidInputError:
    # a proxy is left out with --proxies; the pre-exposure covariate with --no-covariates
    # (it is constant when, say, every user is new)
    flag = "--proxies" if name in {proxy_column(p) for p in PROXIES} else "--no-covariates"
    return InvalidInputError(
        name, value,
        f"is constant over all {n} users: it carries no information about "
        f"{outcome}; leave it out ({flag}) or collect more varied data")


def _check_collinear(cov: FloatArray, names: Sequence[str], n: int) -> None:
    """Refuse a column explained by the others with R² > :data:`COLLINEAR_R2`, from the
    columns' covariance matrix (the R² of each column's least squares on the others)."""
    if cov.shape[0] < 2:
        return
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    for j, name in enumerate(names):
        others = [k for k in range(len(names)) if k != j]
        coef = np.linalg.lstsq(corr[np.ix_(others, others)], corr[others, j], rcond=None)[0]
        r2 = float(corr[j, others] @ coef)
        if r2 > COLLINEAR_R2:
            partners = [names[k] for k in others if abs(float(corr[j, k])) > 0.1]
            with_ = ", ".join(partners) or "the others"
            raise InvalidInputError(
                name, round(r2, 6),
                f"is collinear with {with_} (R² {r2:.6f} from them over {n} users): their "
                f"weights cannot be told apart; leave one out (--proxies)")


def _check_inputs(X: FloatArray, y: FloatArray, names: Sequence[str], outcome: str,
                  min_units: int) -> None:
    n = y.shape[0]
    if n < min_units:
        raise _too_few(n, outcome, min_units)
    if not np.isfinite(y).all():
        rows = np.flatnonzero(~np.isfinite(y))
        raise InvalidInputError(outcome, int(rows.size),
                                f"has NaN or infinite values for {rows.size} of {n} users: "
                                f"only users whose outcome has matured can be calibrated on")
    if np.ptp(y) == 0:
        raise _constant_outcome(outcome, float(y[0]), n)
    for j, name in enumerate(names):
        if np.ptp(X[:, j]) == 0:
            raise _constant_proxy(name, float(X[0, j]), n, outcome)
    _check_collinear(np.atleast_2d(np.cov(X, rowvar=False)), names, n)


# --------------------------------------------------------------------------- fitting


def _alphas(beta: FloatArray) -> FloatArray:
    pos = np.clip(beta, 0.0, None)
    total = pos.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: FloatArray = np.where(total > 0, pos / np.where(total > 0, total, 1.0), np.nan)
    return out


def _alphas_or_refuse(beta: FloatArray, proxies: Sequence[str], outcome: str) -> FloatArray:
    alpha = _alphas(beta)
    if not np.isfinite(alpha).all():
        raise InvalidInputError(
            "proxies", {p: round(float(b), 6) for p, b in zip(proxies, beta, strict=True)},
            f"all have a weight <= 0 on {outcome}: raising none of them raises the index, so "
            f"the proxies do not point at the goal and there are no α's to apply")
    return alpha


def _ols(X: FloatArray, y: FloatArray) -> FloatArray:
    """(intercept, coefficients) of least squares (scikit-learn's LinearRegression)."""
    from sklearn.linear_model import LinearRegression

    m = LinearRegression().fit(X, y)
    return np.concatenate([[float(m.intercept_)], np.asarray(m.coef_, dtype=np.float64)])


#: multinomial counts (times the columns they weigh) held at once by
#: :func:`_resample_counts`: memory stays bounded however many users there are
_RESAMPLE_CELLS: Final = 4_000_000


def _resample_counts(n: int, draws: int, rng: np.random.Generator, *,
                     per_count: int = 1) -> Iterator[tuple[int, npt.NDArray[np.int64]]]:
    """(first draw, counts) chunks of ``draws`` multinomial resamples of ``n`` rows, at
    most :data:`_RESAMPLE_CELLS` / ``per_count`` counts a chunk. Drawn in sequence from
    ``rng``, so the draws do not depend on the chunking."""
    step = max(1, _RESAMPLE_CELLS // (n * per_count))
    p = np.full(n, 1.0 / n)
    for b in range(0, draws, step):
        yield b, rng.multinomial(n, p, size=min(step, draws - b))


def _bootstrap_ols(X: FloatArray, y: FloatArray, draws: int,
                   rng: np.random.Generator) -> FloatArray:
    """Least squares on ``draws`` resamples of the rows (users) with replacement.

    A resample is a vector of multinomial counts w: its fit solves the weighted normal
    equations (Zᵀ diag(w) Z) θ = Zᵀ diag(w) y with Z = [1, X], all draws at once."""
    n = X.shape[0]
    Z = np.column_stack([np.ones(n), X])
    gram = np.empty((draws, Z.shape[1], Z.shape[1]))
    rhs = np.empty((draws, Z.shape[1]))
    for b, w in _resample_counts(n, draws, rng, per_count=Z.shape[1]):
        w = w.astype(np.float64)
        gram[b:b + len(w)] = np.einsum("bi,ij,ik->bjk", w, Z, Z, optimize=True)
        rhs[b:b + len(w)] = (w * y) @ Z
    return _solve_draws(gram, rhs)


def _solve_draws(gram: FloatArray, rhs: FloatArray) -> FloatArray:
    """θ_b solving gram_b θ_b = rhs_b for every draw b (least squares for a singular one)."""
    draws = gram.shape[0]
    out: FloatArray = np.linalg.lstsq(gram[0], rhs[0], rcond=None)[0][None, :].repeat(draws, 0)
    try:
        out = np.asarray(np.linalg.solve(gram, rhs[..., None])[..., 0], dtype=np.float64)
    except np.linalg.LinAlgError:  # a resample without spread in some column
        for b in range(draws):
            out[b] = np.linalg.lstsq(gram[b], rhs[b], rcond=None)[0]
    return out


def _bootstrap_blocks(moments: FloatArray, draws: int, rng: np.random.Generator) -> FloatArray:
    """:func:`_bootstrap_ols` over blocks of users: ``moments[g]`` = Σ v vᵀ over block g's
    users, v = (1, design..., outcome). A resample draws blocks with replacement
    (multinomial counts w) and solves Σ_g w_g (Zᵀ Z)_g θ = Σ_g w_g (Zᵀ y)_g. Blocks formed
    by hashing users are independent groups of them, so this is the cluster bootstrap:
    the same target as resampling users (blocks of one user *are* that)."""
    m, k = moments.shape[0], moments.shape[1]
    flat = moments.reshape(m, k * k)
    acc = np.empty((draws, k * k))
    for b, w in _resample_counts(m, draws, rng, per_count=k):
        acc[b:b + len(w)] = w.astype(np.float64) @ flat
    acc = acc.reshape(draws, k, k)
    return _solve_draws(acc[:, :-1, :-1], acc[:, :-1, -1])


def _calibration_table(pred: FloatArray, y: FloatArray, bins: int) -> pd.DataFrame:
    q = np.unique(np.quantile(pred, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(q, pred, side="right") - 1, 0, max(len(q) - 2, 0))
    rows = []
    for b in range(max(len(q) - 1, 1)):
        m = which == b
        if not m.any():
            continue
        rows.append({"bin": b, "n": int(m.sum()), "predicted": float(pred[m].mean()),
                     "observed": float(y[m].mean()),
                     "observed_se": float(y[m].std(ddof=1) / math.sqrt(m.sum()))
                     if m.sum() > 1 else math.nan})
    return pd.DataFrame(rows, columns=["bin", "n", "predicted", "observed", "observed_se"])


def calibrate(
    units: pd.DataFrame,
    *,
    outcome: str = "outcome",
    proxies: Sequence[str] = PROXIES,
    covariates: Sequence[str] = (),
    folds: int = 5,
    n_bootstrap: int = 200,
    level: float = 0.95,
    seed: int = 0,
    min_units: int = MIN_UNITS,
    flexible: bool = True,
    bins: int = 10,
    meta: Mapping[str, Any] | None = None,
) -> Calibration:
    """Fit the cross-fitted linear surrogate index of ``units[outcome]`` and its α's.

    ``units``: one row per matured user, with ``proxy_<name>`` (the user's early-window
    mean of each normalised proxy, see :func:`proxy_column`), the outcome column and any
    ``covariates`` (pre-exposure values); a ``unit_id`` column names users in messages.
    ``folds``-fold cross-fitting (scikit-learn ``KFold``, shuffled with ``seed``) gives the
    out-of-fold predictions behind R², the calibration table and the residuals; the β's
    are the full-sample least-squares fit and their intervals (and the α's) percentile
    intervals over ``n_bootstrap`` resamples of users. ``flexible`` adds the out-of-fold R²
    of a histogram gradient-boosting regressor on the same inputs (it does not change the
    α's: they come from the linear index by construction).
    """
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold

    proxies = tuple(proxies)
    covariates = tuple(covariates)
    if not proxies:
        raise InvalidInputError("proxies", proxies, f"must name at least one of {list(PROXIES)}")
    unknown = [p for p in proxies if p not in PROXIES]
    if unknown or len(set(proxies)) != len(proxies):
        raise InvalidInputError("proxies", list(proxies),
                                f"must be distinct names among {list(PROXIES)}")
    if not isinstance(folds, int) or folds < 2:
        raise InvalidInputError("folds", folds, "must be an integer >= 2")
    if not isinstance(n_bootstrap, int) or n_bootstrap < 20:
        raise InvalidInputError("bootstrap", n_bootstrap, "must be an integer >= 20")
    if not 0.5 <= level < 1:
        raise InvalidInputError("level", level, "must be in [0.5, 1)")
    if outcome not in units.columns:
        raise InvalidInputError("outcome", outcome,
                                f"is not a column of the units frame ({sorted(units.columns)})")
    y = units[outcome].to_numpy(dtype=np.float64, na_value=np.nan)
    X = _design(units, proxies, covariates)
    names = [proxy_column(p) for p in proxies] + list(covariates)
    _check_inputs(X, y, names, outcome, max(min_units, 2 * folds))
    n, k = X.shape[0], len(proxies)

    params = _ols(X, y)
    kf = KFold(n_splits=folds, shuffle=True, random_state=seed)
    oof = np.empty(n)
    oof_flex = np.full(n, np.nan)
    for train, test in kf.split(X):
        p = _ols(X[train], y[train])
        oof[test] = p[0] + X[test] @ p[1:]
        if flexible:
            from sklearn.ensemble import HistGradientBoostingRegressor

            g = HistGradientBoostingRegressor(max_iter=100, learning_rate=0.1,
                                              early_stopping=False, random_state=seed)
            oof_flex[test] = g.fit(X[train], y[train]).predict(X[test])
    r2 = float(r2_score(y, oof))
    r2_flex = float(r2_score(y, oof_flex)) if flexible else math.nan

    boot = _bootstrap_ols(X, y, n_bootstrap, np.random.default_rng(np.random.SeedSequence(seed)))
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    beta = params[1:1 + k]
    alpha = _alphas_or_refuse(beta, proxies, outcome)
    boot_alpha = _alphas(boot[:, 1:1 + k])
    # a resample where no proxy has a positive weight has no α's: it counts as α = 0 for
    # every proxy, so the intervals widen rather than silently dropping the draw
    boot_alpha = np.where(np.isfinite(boot_alpha), boot_alpha, 0.0)
    coef_ci = {p: (float(np.quantile(boot[:, 1 + j], lo_q)), float(np.quantile(boot[:, 1 + j], hi_q)))
               for j, p in enumerate(proxies)}
    alpha_ci = {p: (float(np.quantile(boot_alpha[:, j], lo_q)),
                    float(np.quantile(boot_alpha[:, j], hi_q))) for j, p in enumerate(proxies)}
    resid = y - oof
    return Calibration(
        outcome=outcome, proxies=proxies, covariates=covariates, n_units=n, folds=folds,
        n_bootstrap=n_bootstrap, seed=seed, intercept=float(params[0]),
        coef={p: float(beta[j]) for j, p in enumerate(proxies)}, coef_ci=coef_ci,
        covariate_coef={c: float(params[1 + k + j]) for j, c in enumerate(covariates)},
        alpha={p: float(alpha[j]) for j, p in enumerate(proxies)}, alpha_ci=alpha_ci,
        clipped=tuple(p for j, p in enumerate(proxies) if beta[j] < 0),
        r2_oof=r2, r2_oof_flexible=r2_flex, outcome_mean=float(y.mean()),
        residual_sd=float(resid.std(ddof=1)),
        residual_quantiles={f"q{int(q * 100):02d}": float(np.quantile(resid, q))
                            for q in (0.05, 0.25, 0.5, 0.75, 0.95)},
        calibration=_calibration_table(oof, y, bins), level=level, boot_params=boot,
        meta=dict(meta or {}),
    )


# --------------------------------------------------------------------------- early read


@dataclass(frozen=True)
class Projection:
    """The projected relative lift of the outcome (a surrogate-index lift), with interval.

    A *projection*: it equals the lift of the outcome only if surrogacy holds (the
    treatment moves the outcome through the proxies alone, and the index fitted on
    matured users holds for these users). ``ci_low``/``ci_high`` is a prediction interval
    for the lift these cohorts will *measure* on day 30: it carries the sampling
    uncertainty of the index, of both cohorts' early proxies and of each cohort's day-30
    outcome around its index (the calibration's residual spread).
    """

    n: int
    n_control: int
    index_mean: float
    index_mean_control: float
    lift: float
    ci_low: float
    ci_high: float
    se: float
    level: float


def _resampled_means(sums: FloatArray, counts: FloatArray, draws: int,
                     rng: np.random.Generator) -> FloatArray:
    """Column means of ``draws`` resamples, with replacement, of the blocks of a cohort
    (``sums[g]``: block g's column sums over its ``counts[g]`` users): each a vector of
    multinomial counts w, the mean Σ w_g sums_g / Σ w_g counts_g. With one user a block
    (counts all 1) it is the plain bootstrap of users; no resampled rows are materialised."""
    m = sums.shape[0]
    out = np.empty((draws, sums.shape[1]))
    for b, w in _resample_counts(m, draws, rng):
        wf = w.astype(np.float64)
        out[b:b + len(w)] = (wf @ sums) / (wf @ counts)[:, None]
    return out


def project_lift(calibration: Calibration, treatment: pd.DataFrame, control: pd.DataFrame,
                 *, seed: int = 0, min_units: int = 20) -> Projection:
    """Relative lift of the mean surrogate index, ``treatment`` over ``control``, with a
    prediction interval for the day-30 lift the two cohorts will measure.

    Both frames hold one row per user whose early window is complete, with the columns
    :func:`calibrate` was fitted on. Draw b of the percentile interval is

        (θ_b · Z̄*_t + ε_t) / (θ_b · Z̄*_c + ε_c) − 1,   ε ~ N(0, σ²_res / n),

    with θ_b a bootstrap resample of the index's parameters (users of the calibration set
    resampled: the index weights are estimated, a generated regressor — Murphy & Topel
    1985), Z̄* the design means of a resample of each cohort, and ε the mean of the cohort's
    day-30 residuals around its index (σ_res the calibration's out-of-fold residual sd).
    Without ε the interval is for the mean index, which is not what day 30 measures: the
    outcome's own noise around the index is most of the measured lift's uncertainty when
    the index explains little of each user's outcome.
    """
    Xt = _design(treatment, calibration.proxies, calibration.covariates)
    Xc = _design(control, calibration.proxies, calibration.covariates)
    if calibration.boot_params.shape[0] == 0:
        raise InvalidInputError("calibration", "no bootstrap", "must carry bootstrap draws")
    return _project(calibration.params, calibration.boot_params, calibration.residual_sd,
                    calibration.level, (Xt, np.ones(Xt.shape[0])), (Xc, np.ones(Xc.shape[0])),
                    seed=seed, min_units=min_units)


def _project(params: FloatArray, boot: FloatArray, residual_sd: float, level: float,
             treatment: tuple[FloatArray, FloatArray], control: tuple[FloatArray, FloatArray],
             *, seed: int, min_units: int = 20) -> Projection:
    """:func:`project_lift` from each cohort's (design sums, users) per block of users."""
    (St, Nt), (Sc, Nc) = treatment, control
    nt, nc = round(float(Nt.sum())), round(float(Nc.sum()))
    for name, n in (("treatment", nt), ("control", nc)):
        if n < min_units:
            raise InvalidInputError(name, n, f"has too few users with a complete early "
                                             f"window to project (need >= {min_units})")
    mt = float(params[0] + (St.sum(axis=0) / Nt.sum()) @ params[1:])
    mc = float(params[0] + (Sc.sum(axis=0) / Nc.sum()) @ params[1:])
    if not mc > 0:
        raise InvalidInputError("control", round(mc, 6),
                                "has a projected outcome <= 0: no relative lift to project")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    draws_n = boot.shape[0]
    sd = residual_sd if math.isfinite(residual_sd) else 0.0
    zt = _resampled_means(St, Nt, draws_n, rng)
    zc = _resampled_means(Sc, Nc, draws_n, rng)
    it = boot[:, 0] + np.einsum("bj,bj->b", zt, boot[:, 1:]) \
        + rng.normal(0.0, sd / math.sqrt(nt), size=draws_n)
    ic = boot[:, 0] + np.einsum("bj,bj->b", zc, boot[:, 1:]) \
        + rng.normal(0.0, sd / math.sqrt(nc), size=draws_n)
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = np.where(ic > 0, it / ic - 1.0, np.nan)
    draws = draws[np.isfinite(draws)]
    if draws.size < 2:
        raise InvalidInputError("control", round(mc, 6),
                                "has a projected outcome too close to 0 for an interval")
    lo, hi = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    return Projection(nt, nc, mt, mc, mt / mc - 1.0, float(lo), float(hi),
                      float(draws.std(ddof=1)), level)


# --------------------------------------------------------------------------- the store


DAY_MS: Final = 86_400_000


@dataclass(frozen=True)
class Units:
    """Per-user early-window proxy means and outcomes, read from the store.

    ``frame``: unit_id, experiment_id, variant, exposure_ts, decisions, ``proxy_<name>``
    per proxy, the outcome column (NaN until it has matured), the covariate columns,
    ``window_complete`` and ``matured``. ``notes``: what was done to the data, in words
    (users left out, proxies imputed) — the CLI prints them.
    """

    frame: pd.DataFrame
    outcome: str
    covariates: tuple[str, ...]
    window_days: int
    notes: tuple[str, ...]

    @property
    def matured(self) -> pd.DataFrame:
        return self.frame[self.frame["matured"]].reset_index(drop=True)


def fill_unobserved(units: pd.DataFrame) -> list[str]:
    """Give a user with no observed value of a proxy in the window (NaN: a rating is
    optional) the mean over the users who have one, in place; return what was done, in
    words. A proxy observed for nobody stays NaN (:func:`calibrate` then names it)."""
    notes = []
    for p in PROXIES:
        col = proxy_column(p)
        if col not in units.columns:
            continue
        mean = units[col].to_numpy(dtype=np.float64, na_value=np.nan)
        missing = ~np.isfinite(mean)
        if missing.any() and (~missing).any():
            units[col] = np.where(missing, float(np.nanmean(mean)), mean)
            notes.append(f"{p}: {int(missing.sum()):,} of {len(units):,} users had no observed "
                         f"{p} in the window; their mean is the other users' mean")
    return notes


def _outcome_columns(outcome: str, experiments: Sequence[str],
                     window_days: int) -> tuple[str, str]:
    """(unit_metrics column, covariate column) of ``outcome``, the arguments checked."""
    from bandit.analysis.metrics import METRICS

    if outcome not in METRICS:
        raise InvalidInputError("outcome", outcome, f"must be one of {sorted(METRICS)}")
    if not experiments:
        raise InvalidInputError("experiments", list(experiments),
                                "must name at least one experiment (none in the store?)")
    column, covariate = METRICS[outcome]
    horizon = int(column.rsplit("_", 1)[-1].lstrip("d"))
    if isinstance(window_days, bool) or not isinstance(window_days, int) \
            or not 1 <= window_days <= horizon:
        raise InvalidInputError("window_days", window_days,
                                f"must be an integer in [1, {horizon}] (the outcome's day)")
    return column, covariate


def load_units(store: Any, experiments: Sequence[str], *, outcome: str = "day30_engagement",
               window_days: int = 7, as_of_ms: int | None = None, length_cap: int = 20,
               covariates: bool = True) -> Units:
    """Join each user's early-window proxies (:meth:`Store.early_proxies`) with its
    outcome and pre-exposure covariate (:meth:`Store.unit_metrics`) over ``experiments``.

    ``outcome`` is a metric of :data:`bandit.analysis.lift.METRICS`. A user's proxy mean
    is over its decisions in the window with that proxy observed; a user with none (a
    rating is optional) gets the mean over the users who have one, and the notes say how
    many. Users without a decision in the window have no proxies and are left out.
    """
    column, covariate = _outcome_columns(outcome, experiments, window_days)
    cov = (covariate,) if covariates else ()
    frames = []
    notes: list[str] = []
    for exp_id in experiments:
        prox = store.early_proxies(exp_id, as_of_ms, window_days=window_days,
                                   length_cap=length_cap)
        metrics = store.unit_metrics(exp_id, as_of_ms)
        keep = ["unit_id", column, *cov]
        merged = prox.merge(metrics[keep], on="unit_id", how="left")
        merged.insert(1, "experiment_id", exp_id)
        no_window = int(len(metrics) - len(prox))
        if no_window > 0:
            notes.append(f"{exp_id}: {no_window:,} exposed users had no decision in their "
                         f"first {window_days} days and are left out")
        frames.append(merged)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if df.empty:
        raise InvalidInputError("experiments", list(experiments),
                                "have no user with a decision in the early window")
    as_of = int(as_of_ms) if as_of_ms is not None else int(time.time() * 1000)
    for p in PROXIES:
        n = df[f"{p}_n"].to_numpy()
        s = df[f"{p}_sum"].to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            df[proxy_column(p)] = np.where(n > 0, s / np.where(n > 0, n, 1), np.nan)
    notes += fill_unobserved(df)
    df = df.rename(columns={column: outcome})
    df[outcome] = pd.to_numeric(df[outcome], errors="coerce").astype("float64")
    end = df["exposure_ts"] + window_days * DAY_MS
    df["window_complete"] = end <= as_of
    df["matured"] = df[outcome].notna() & df["window_complete"]
    if cov:
        x = df.loc[df["matured"], covariate].to_numpy(dtype=np.float64, na_value=np.nan)
        x = x[np.isfinite(x)]
        if len(x) > 1 and float(np.ptp(x)) == 0.0:
            # constant (say, every user is new): it carries nothing about the outcome
            notes.append(f"{covariate} is {x[0]:g} for all {len(x):,} matured users (no "
                         f"pre-exposure activity): left out of the index")
            cov = ()
    return Units(df, outcome, cov, window_days, tuple(notes))


#: the surrogacy assumption in plain words, printed beside every projection
SURROGACY: Final = ("projection, not a measurement: it assumes the variant changes the "
                    "outcome only through the proxies of the first days (surrogacy)")


#: hash blocks of users (:meth:`Store.early_moments`) the early read's bootstraps resample
EARLY_BLOCKS: Final = 2048


def _early_matrices(frame: pd.DataFrame) -> FloatArray:
    """Σ v vᵀ per row of :meth:`Store.early_moments`, v = (1, retry, rating, length, x, y)."""
    from bandit.store.queries import EARLY_COLUMNS

    k = len(EARLY_COLUMNS) + 1
    M = np.empty((len(frame), k, k))
    M[:, 0, 0] = frame["n"].to_numpy(dtype=np.float64)
    for a, ca in enumerate(EARLY_COLUMNS, start=1):
        M[:, 0, a] = M[:, a, 0] = frame[f"s_{ca}"].to_numpy(dtype=np.float64)
        for b, cb in enumerate(EARLY_COLUMNS[a - 1:], start=a):
            M[:, a, b] = M[:, b, a] = frame[f"c_{ca}_{cb}"].to_numpy(dtype=np.float64)
    return M


def _fill_unobserved_moments(frame: pd.DataFrame, M: FloatArray) -> None:
    """:func:`fill_unobserved` on moments, in place: a group whose users have no observed
    value of a proxy (0 in v) gets the mean over every user who has one, v_p = m_p, i.e.
    Σ v vᵀ -> T (Σ v vᵀ) Tᵀ with T = I + m_p e_p e_0ᵀ. A proxy observed for nobody raises."""
    n = M[:, 0, 0]
    for j, p in enumerate(PROXIES, start=1):
        has = frame[f"has_{p}"].to_numpy(dtype=bool)
        if has.all():
            continue
        if not has.any():
            raise InvalidInputError(
                proxy_column(p), int(n.sum()),
                f"is observed for none of the {int(n.sum())} users with an early window: "
                f"leave it out (--proxies) or collect it before projecting")
        m = float(M[has, 0, j].sum() / n[has].sum())
        sub = M[~has]
        sub[:, j, :] += m * sub[:, 0, :]
        sub[:, :, j] += m * sub[:, :, 0]
        M[~has] = sub


def _by_block(blocks: npt.NDArray[np.int64],
              M: FloatArray) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """(block ids present, the moments summed per block)."""
    ids, inv = np.unique(blocks, return_inverse=True)
    out = np.zeros((len(ids), *M.shape[1:]))
    np.add.at(out, inv, M)
    return ids, out


@dataclass(frozen=True)
class _BlockIndex:
    """The linear surrogate index fitted on moments of blocks of matured users: what
    :func:`_project` needs (the full fit, its bootstrap draws, the out-of-fold residual sd)."""

    params: FloatArray
    boot: FloatArray
    residual_sd: float
    n_units: int
    level: float


def _moment_summary(M: FloatArray) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Means, covariance and which columns are constant (to rounding) of the users summed
    in ``M`` = Σ v vᵀ, v = (1, ...)."""
    mean = M[0, 1:] / M[0, 0]
    cov = (M[1:, 1:] - M[0, 0] * np.outer(mean, mean)) / max(M[0, 0] - 1.0, 1.0)
    scale = np.maximum(np.abs(mean), np.sqrt(np.abs(np.diag(M[1:, 1:])) / M[0, 0]))
    flat = np.diag(cov) <= 1e-12 * np.where(scale > 0, scale, 1.0) ** 2
    return mean, cov, flat


def _fit_blocks(Mb: FloatArray, block_ids: npt.NDArray[np.int64], *, outcome: str,
                names: Sequence[str], proxies: Sequence[str], folds: int = 5,
                n_bootstrap: int = 200, level: float = 0.95, seed: int = 0,
                min_units: int = MIN_UNITS) -> _BlockIndex:
    """:func:`calibrate`'s linear index, its cross-fitting and its bootstrap from block
    moments ``Mb`` (Σ v vᵀ per block, v = (1, design..., y)): least squares from the
    normal equations; the folds are blocks (block id mod ``folds``), each fold's
    out-of-fold residuals summed from its own moments under the other folds' fit; the
    bootstrap resamples blocks (:func:`_bootstrap_blocks`). Refuses what :func:`calibrate`
    refuses, in its words."""
    M = Mb.sum(axis=0)
    n = round(float(M[0, 0]))
    d = M.shape[0] - 1  # intercept + design
    if n < max(min_units, 2 * folds):
        raise _too_few(n, outcome, max(min_units, 2 * folds))
    mean, cov, flat = _moment_summary(M)
    if flat[-1]:
        raise _constant_outcome(outcome, float(mean[-1]), n)
    for j, name in enumerate(names):
        if flat[j]:
            raise _constant_proxy(name, float(mean[j]), n, outcome)
    _check_collinear(cov[:-1, :-1], names, n)

    def solve(G: FloatArray) -> FloatArray:
        # columns scaled to unit size first: pre-exposure seconds beside [0, 1] proxies
        s = np.sqrt(np.diag(G[:d, :d]))
        s = np.where(s > 0, s, 1.0)
        theta: FloatArray = np.linalg.lstsq(G[:d, :d] / np.outer(s, s), G[:d, d] / s,
                                            rcond=None)[0] / s
        return theta

    params = solve(M)
    k = len(proxies)
    _alphas_or_refuse(params[1:1 + k], proxies, outcome)
    fold = block_ids % folds
    se, se2 = 0.0, 0.0
    for f in range(folds):
        Gf = Mb[fold == f].sum(axis=0)
        theta = solve(M - Gf)
        se += float(Gf[0, d] - theta @ Gf[0, :d])
        se2 += float(Gf[d, d] - 2.0 * theta @ Gf[:d, d] + theta @ Gf[:d, :d] @ theta)
    resid_sd = math.sqrt(max(se2 - se * se / n, 0.0) / (n - 1))
    boot = _bootstrap_blocks(Mb, n_bootstrap, np.random.default_rng(np.random.SeedSequence(seed)))
    return _BlockIndex(params, boot, resid_sd, n, level)


def early_read(store: Any, experiment_id: str, control: str, *, as_of_ms: int | None = None,
               outcome: str = "day30_engagement", window_days: int = 7,
               length_cap: int = 20, seed: int = 0,
               calibration_experiments: Sequence[str] | None = None,
               blocks: int = EARLY_BLOCKS) -> pd.DataFrame:
    """Projected lift of ``outcome`` of each variant of ``experiment_id`` over ``control``
    from its users' early windows: the index is calibrated on the matured users of
    ``calibration_experiments`` (default: every experiment in the store) and applied to
    every user of the experiment whose window is complete. One row per variant:
    variant, n, n_control, projected_lift, ci_low, ci_high, note (:data:`SURROGACY`).

    The index is linear, so the fit and the projection need only sums over users: it
    reads :meth:`Store.early_moments` (n, Σv, Σv·vᵀ per variant, maturity, observed
    proxies and hash block of users) instead of a row per user — the same users, proxy
    means (an unobserved proxy filled with the others' mean, as :func:`load_units`
    does), the same least-squares index and projection as :func:`calibrate` and
    :func:`project_lift` on :func:`load_units`' frame. The folds of the cross-fitting and
    the units the bootstraps resample are ``blocks`` hash blocks of users instead of
    single users (a cluster bootstrap of randomly formed clusters: the same target); with
    fewer users than blocks they are nearly single users."""
    exps = list(calibration_experiments or store.experiments())
    column, covariate = _outcome_columns(outcome, exps, window_days)
    frames = []
    for exp_id in exps:
        f = store.early_moments(exp_id, column, covariate, as_of_ms, window_days=window_days,
                                length_cap=length_cap, blocks=blocks)
        f.insert(0, "experiment_id", exp_id)
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    if df.empty:
        raise InvalidInputError("experiments", exps,
                                "have no user with a decision in the early window")
    M = _early_matrices(df)
    _fill_unobserved_moments(df, M)
    blocks_of = df["block"].to_numpy(dtype=np.int64)
    matured = df["matured"].to_numpy(dtype=bool)
    names = [proxy_column(p) for p in PROXIES] + [covariate]
    if matured.any() and _moment_summary(M[matured].sum(axis=0))[2][len(names) - 1]:
        # the pre-exposure covariate is the same for every matured user (say, all are
        # new): it carries nothing, and the index goes without it, as in load_units
        keep = [j for j in range(M.shape[1]) if j != len(names)]
        M = M[:, keep][:, :, keep]
        names = names[:-1]
    fit_ids, Mb = _by_block(blocks_of[matured], M[matured])
    index = _fit_blocks(Mb, fit_ids, outcome=outcome, names=names, proxies=PROXIES,
                        seed=seed)
    mine = ((df["experiment_id"] == experiment_id) & df["window_complete"]).to_numpy()
    variant_of = df["variant"].to_numpy(dtype=object)

    def cohort(variant: str) -> tuple[FloatArray, FloatArray]:
        """The cohort's design sums (intercept and outcome dropped) and users per block."""
        rows = mine & (variant_of == variant)
        _, Mv = _by_block(blocks_of[rows], M[rows])
        return Mv[:, 0, 1:-1], Mv[:, 0, 0]

    rows = []
    variants = sorted(set(variant_of[mine]) - {control})
    ctrl = cohort(control)
    for variant in variants:
        p = _project(index.params, index.boot, index.residual_sd, index.level,
                     cohort(variant), ctrl, seed=seed)
        rows.append({"variant": variant, "n": p.n, "n_control": p.n_control,
                     "projected_lift": p.lift, "ci_low": p.ci_low, "ci_high": p.ci_high,
                     "calibration_units": index.n_units, "note": SURROGACY})
    return pd.DataFrame(rows, columns=["variant", "n", "n_control", "projected_lift", "ci_low",
                                       "ci_high", "calibration_units", "note"])


#: columns of :attr:`ProjectionHistory.rows`
HISTORY_COLUMNS: Final = ("experiment_id", "variant", "n", "n_control", "projected_lift",
                          "ci_low", "ci_high", "measured_lift", "measured_ci_low",
                          "measured_ci_high", "gap", "covered", "calibrated_on",
                          "calibration_units")


@dataclass(frozen=True)
class ProjectionHistory:
    """Projections checked against measurements, one row per (experiment, variant).

    ``rows`` (:data:`HISTORY_COLUMNS`): the day-``window_days`` projection of the
    outcome's lift made from the matured users' early windows, its interval, the lift
    their outcome measured (Fieller interval, :func:`bandit.stats.relative_lift`),
    ``gap`` = measured − projected and whether the interval ``covered`` the measurement;
    ``calibrated_on`` says whose matured users the index was fitted on. ``notes``: the
    experiments left out, and why, in words.
    """

    rows: pd.DataFrame
    notes: tuple[str, ...]
    level: float = 0.95

    @property
    def coverage(self) -> float:
        """Share of projections whose interval covered the measured lift (NaN: none)."""
        return float(self.rows["covered"].mean()) if len(self.rows) else math.nan

    def mean_gap(self) -> tuple[float, float, float]:
        """Mean of measured − projected over the rows and its t interval at ``level``
        (NaN bounds with fewer than two rows). A mean gap clear of 0 is a projection
        biased on this history, which per-experiment coverage can hide when each
        experiment's day-30 noise is larger than the bias."""
        from scipy import stats as sps

        g = self.rows["gap"].to_numpy(dtype=np.float64)
        if g.size == 0:
            return math.nan, math.nan, math.nan
        m = float(g.mean())
        if g.size < 2:
            return m, math.nan, math.nan
        h = float(sps.t.ppf(1 - (1 - self.level) / 2, g.size - 1)) * float(g.std(ddof=1)) \
            / math.sqrt(g.size)
        return m, m - h, m + h


def projection_history(store: Any, control: str, *, as_of_ms: int | None = None,
                       outcome: str = "day30_engagement", window_days: int = 7,
                       length_cap: int = 20, seed: int = 0,
                       min_units: int = MIN_UNITS) -> ProjectionHistory:
    """Validation on the experiment history: for every experiment of the store whose
    ``outcome`` has matured for users of ``control`` and of another variant, the
    projection from those users' first ``window_days`` days against the lift their
    outcome measured.

    The index is fitted on the matured users of the *other* experiments, as it could have
    been when the experiment was seven days old; where they are too few (a store with one
    experiment) it is fitted on every matured user, this experiment's included, and
    ``calibrated_on`` says so — an in-sample check, kinder to the projection than the
    real one. Raises :class:`InvalidInputError` when the store has no experiment or no
    user with an early window; an empty ``rows`` (with ``notes``) when nothing has matured.
    """
    from bandit.stats import relative_lift

    exps = list(store.experiments())
    units = load_units(store, exps, outcome=outcome, window_days=window_days,
                       as_of_ms=as_of_ms, length_cap=length_cap)
    matured = units.matured
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for exp_id in exps:
        own = matured[matured["experiment_id"] == exp_id]
        ctrl = own[own["variant"] == control]
        variants = sorted(set(own["variant"]) - {control})
        if ctrl.empty or not variants:
            notes.append(f"{exp_id}: no matured {outcome} in {control} and another variant yet")
            continue
        others = matured[matured["experiment_id"] != exp_id]
        if len(others) >= min_units:
            fit_on, source = others, "other experiments"
        else:
            fit_on, source = matured, "in-sample (this experiment included)"
        try:
            cal = calibrate(fit_on, outcome=outcome, covariates=units.covariates, seed=seed,
                            flexible=False, min_units=min_units)
        except InvalidInputError as exc:
            notes.append(f"{exp_id}: no index to project with ({exc})")
            continue
        for variant in variants:
            treat = own[own["variant"] == variant]
            try:
                p = project_lift(cal, treat, ctrl, seed=seed)
                m = relative_lift(treat[outcome].to_numpy(dtype=np.float64),
                                  ctrl[outcome].to_numpy(dtype=np.float64),
                                  alpha=1 - cal.level)
            except InvalidInputError as exc:
                notes.append(f"{exp_id} / {variant}: {exc}")
                continue
            rows.append({"experiment_id": exp_id, "variant": variant, "n": p.n,
                         "n_control": p.n_control, "projected_lift": p.lift,
                         "ci_low": p.ci_low, "ci_high": p.ci_high,
                         "measured_lift": m.estimate, "measured_ci_low": m.ci_low,
                         "measured_ci_high": m.ci_high, "gap": m.estimate - p.lift,
                         "covered": bool(p.ci_low <= m.estimate <= p.ci_high),
                         "calibrated_on": source, "calibration_units": cal.n_units})
    return ProjectionHistory(pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)), tuple(notes))
