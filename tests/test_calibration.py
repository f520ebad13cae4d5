"""Surrogate-index calibration: recovery of known weights, bad input, the store and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bandit.analysis.calibration import PROXIES, calibrate, load_units, proxy_column
from bandit.cli import main
from bandit.config import load_config
from bandit.errors import InvalidInputError
from bandit.events import DecisionEvent, EngagementEvent, FeedbackEvent
from bandit.store import ClickHouseStore, open_store

SEED = 20261201


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """BLAS / OpenMP pools of one thread: the fits are small, and on a machine whose cores
    are busy more threads only spin (several times the CPU for the same result)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield
DAY_MS = 86_400_000
START_MS = 1_767_225_600_000  # 2026-01-01 UTC


def linear_users(seq: np.random.SeedSequence, n: int = 1000,
                 beta: tuple[float, float, float] = (600.0, 300.0, 100.0)) -> pd.DataFrame:
    """Users whose outcome is linear in their proxy means with known ``beta`` (+ noise)."""
    rng = np.random.default_rng(seq)
    q = rng.standard_normal(n)
    retry = np.clip(0.7 + 0.1 * q + 0.08 * rng.standard_normal(n), 0, 1)
    rating = np.clip(0.6 + 0.1 * q + 0.15 * rng.standard_normal(n), 0, 1)
    length = np.clip(0.5 + 0.05 * q + 0.1 * rng.standard_normal(n), 0, 1)
    X = np.column_stack([retry, rating, length])
    y = 100.0 + X @ np.asarray(beta) + rng.normal(0.0, 150.0, n)
    return pd.DataFrame({"unit_id": [f"u{i}" for i in range(n)], "proxy_retry": retry,
                         "proxy_rating": rating, "proxy_length": length, "outcome": y})


def test_calibrate_alphas_cover_planted_linear_weights() -> None:
    """Each α's 95% bootstrap interval covers the planted α = β / Σβ: over 100 seeds × 3
    proxies at least 90% of intervals (expected ≈ 94%; with 300 trials the chance of
    falling below 90% is ≈ 0.2%)."""
    beta = np.array([600.0, 300.0, 100.0])
    truth = beta / beta.sum()
    hits = np.zeros(len(PROXIES))
    seeds = np.random.SeedSequence(SEED).spawn(100)
    for i, seq in enumerate(seeds):
        cal = calibrate(linear_users(seq), seed=i, flexible=False, n_bootstrap=100)
        hits += [cal.alpha_ci[p][0] <= truth[j] <= cal.alpha_ci[p][1]
                 for j, p in enumerate(PROXIES)]
    assert hits.sum() / (3 * len(seeds)) >= 0.90, hits
    assert (hits / len(seeds) >= 0.85).all(), hits


@pytest.mark.validation
def test_calibrate_alphas_cover_planted_weights_jointly_with_bonferroni() -> None:
    """All three α's inside their (1 - 0.05/3) intervals at once in >= 90% of 300 seeds."""
    beta = np.array([600.0, 300.0, 100.0])
    truth = beta / beta.sum()
    joint = 0
    seeds = np.random.SeedSequence(SEED + 1).spawn(300)
    for i, seq in enumerate(seeds):
        cal = calibrate(linear_users(seq), seed=i, flexible=False, n_bootstrap=400,
                        level=1 - 0.05 / 3)
        joint += all(cal.alpha_ci[p][0] <= truth[j] <= cal.alpha_ci[p][1]
                     for j, p in enumerate(PROXIES))
    assert joint / len(seeds) >= 0.90


def test_calibrate_nonlinear_truth_reports_r2_and_ranks_proxies() -> None:
    rng = np.random.default_rng(np.random.SeedSequence(SEED + 2))
    df = linear_users(np.random.SeedSequence(SEED + 3), n=3000)
    X = df[[proxy_column(p) for p in PROXIES]].to_numpy()
    # convex in retry, quadratic in rating, weak in length: marginal effects rank retry >
    # rating > length everywhere on the data's range
    df["outcome"] = (400 * np.exp(2 * X[:, 0]) + 600 * X[:, 1] ** 2 + 50 * X[:, 2]
                     + rng.normal(0, 100, len(df)))
    cal = calibrate(df, seed=1)
    assert 0 < cal.r2_oof < 1 and np.isfinite(cal.r2_oof_flexible)
    assert cal.alpha["retry"] > cal.alpha["rating"] > cal.alpha["length"]
    assert len(cal.calibration) == 10 and cal.calibration["n"].sum() == len(df)
    # calibration table: out-of-fold predictions track the observed means bin by bin
    assert np.corrcoef(cal.calibration["predicted"], cal.calibration["observed"])[0, 1] > 0.95


def test_calibrate_negative_weight_is_clipped_and_named() -> None:
    cal = calibrate(linear_users(np.random.SeedSequence(SEED + 4), n=3000,
                                 beta=(600.0, 300.0, -400.0)), seed=0, flexible=False)
    assert cal.alpha["length"] == 0.0 and cal.clipped == ("length",)
    assert cal.alpha["retry"] + cal.alpha["rating"] == pytest.approx(1.0)
    assert cal.coef_ci["length"][1] < 0


def _bad(kind: str) -> pd.DataFrame:
    df = linear_users(np.random.SeedSequence(SEED + 5), n=400)
    if kind == "constant":
        df["proxy_rating"] = 0.75
    elif kind == "collinear":
        df["proxy_length"] = 0.2 + 0.5 * df["proxy_retry"]
    elif kind == "nan-proxy":
        df.loc[[3, 17], "proxy_retry"] = np.nan
    elif kind == "nan-outcome":
        df.loc[5, "outcome"] = np.nan
    elif kind == "too-few":
        df = df.iloc[:50]
    elif kind == "none":
        df = df.iloc[:0]
    elif kind == "no-positive":
        df["outcome"] = 3000 - 2000 * df["proxy_retry"] - 900 * df["proxy_rating"] \
            - 500 * df["proxy_length"]
    return df


@pytest.mark.parametrize(
    ("kind", "field", "words"),
    [
        ("none", "units", "too few matured users"),
        ("too-few", "units", "50 have their outcome in the past"),
        ("constant", "proxy_rating", "constant over all 400 users"),
        ("collinear", "proxy_retry", "collinear with"),
        ("nan-proxy", "proxy_retry", "NaN or infinite values for 2 of 400 users (u3, u17)"),
        ("nan-outcome", "outcome", "NaN or infinite values for 1 of 400"),
        ("no-positive", "proxies", "do not point at the goal"),
    ],
)
def test_calibrate_bad_input_is_refused_in_words(kind: str, field: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        calibrate(_bad(kind), flexible=False)
    assert err.value.field == field
    assert words in str(err.value)


def test_calibrate_bad_options_are_refused() -> None:
    df = linear_users(np.random.SeedSequence(SEED), n=300)
    for kwargs, field in (({"proxies": ("retry", "clicks")}, "proxies"), ({"folds": 1}, "folds"),
                          ({"n_bootstrap": 3}, "bootstrap"), ({"outcome": "nope"}, "outcome")):
        with pytest.raises(InvalidInputError) as err:
            calibrate(df, **kwargs)  # type: ignore[arg-type]
        assert err.value.field == field


# --------------------------------------------------------------------------- the store


def write_store(store: ClickHouseStore, seq: np.random.SeedSequence, n: int = 500,
                beta: tuple[float, float, float] = (900.0, 300.0, 0.0), *,
                experiment_id: str = "exp-cal", pre_period: bool = True) -> int:
    """Users with 2 decisions a day for 10 days; the day-30 screen time is linear (known
    ``beta``) in the user's *window* (days 0-6) proxy means, so decisions of days 7-9
    (retried every time) and a duplicated feedback event must not change the fit.
    Returns the as-of (ms) at which users exposed in the first 4 days have matured."""
    rng = np.random.default_rng(seq)
    decisions, feedback, engagement = [], [], []
    cap = 20
    for u in range(n):
        uid = f"u{u:04d}" if experiment_id == "exp-cal" else f"{experiment_id}-u{u:04d}"
        exp_ts = START_MS + int(rng.integers(0, 6)) * DAY_MS + int(rng.integers(0, DAY_MS // 2))
        q = rng.standard_normal()
        p_ok, p_star, p_len = (1 / (1 + np.exp(-(a + b * q)))
                               for a, b in ((1.0, 0.8), (0.3, 0.6), (-0.2, 0.5)))
        ok_sum = star_sum = len_sum = 0.0
        ok_n = star_n = len_n = 0
        for k in range(20):
            day = k // 2
            ts = exp_ts + day * DAY_MS + (k % 2) * 3_600_000
            did = f"d-{uid}-{k}"
            decisions.append(DecisionEvent(
                event_id=f"e-{did}", decision_id=did, ts_ms=ts, unit_id=uid,
                conversation_id=f"c-{uid}-{k}", experiment_id=experiment_id,
                variant="bandit" if u % 2 else "gpt35", arm_id="gpt35", propensity=1.0,
                policy_version="v1", context=(1.0, 0.0)))
            retried = bool(rng.random() >= p_ok) if day < 7 else True
            rating = int(1 + rng.binomial(4, p_star)) if rng.random() < 0.5 else None
            length = int(rng.binomial(cap, p_len))
            if day < 7:
                ok_sum += not retried
                ok_n += 1
                len_sum += min(length, cap) / cap
                len_n += 1
                if rating is not None:
                    star_sum += (rating - 1) / 4
                    star_n += 1
            fb = FeedbackEvent(event_id=f"f-{did}", decision_id=did, ts_ms=ts + 60_000,
                               unit_id=uid, conversation_id=f"c-{uid}-{k}", retried=retried,
                               rating=rating, conversation_length=length)
            feedback.append(fb)
            if k == 0:
                feedback.append(fb)  # a replayed event: counted once
        means = np.array([ok_sum / ok_n, star_sum / star_n if star_n else np.nan,
                          len_sum / len_n])
        if not np.isfinite(means[1]):
            means[1] = 0.5  # never happens at 7 ratings expected; keep the truth defined
        y = max(50.0 + float(means @ np.asarray(beta)) + rng.normal(0, 60), 1.0)
        engagement.append(EngagementEvent(event_id=f"g-{uid}", ts_ms=exp_ts + 30 * DAY_MS + 1000,
                                          unit_id=uid, screen_time_s=y, messages=3))
        pre = float(rng.gamma(2, 100))
        if pre_period:  # else every user is new: no activity before exposure
            engagement.append(EngagementEvent(event_id=f"p-{uid}", ts_ms=exp_ts - 2 * DAY_MS,
                                              unit_id=uid, screen_time_s=pre, messages=1))
    store.insert_decisions(decisions)
    store.insert_feedback(feedback)
    store.insert_engagement(engagement)
    return START_MS + 35 * DAY_MS


@pytest.fixture(scope="module")
def calibration_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    """Written once for the module (closed again: each test opens it read-only)."""
    store_dsn = f"chdb://{tmp_path_factory.mktemp('calibration') / 'chdb'}"
    s = open_store(store_dsn)
    try:
        as_of = write_store(s, np.random.SeedSequence(SEED + 6))
    finally:
        s.close()
    return store_dsn, as_of


def test_load_units_reads_window_means_and_matured_outcomes(
        calibration_store: tuple[str, int]) -> None:
    dsn, as_of = calibration_store
    with open_store(dsn, read_only=True) as s:
        units = load_units(s, ["exp-cal"], as_of_ms=as_of)
    df = units.frame
    assert len(df) == 500 and units.covariates == ("pre_engagement",)
    # 14 window decisions per user: days 7-9 (always retried) are outside the window
    assert (df["decisions"] == 14).all() and (df["retry_n"] == 14).all()
    assert df["proxy_retry"].between(0, 1).all() and df["proxy_retry"].mean() > 0.5
    # users exposed after as_of - 31 days have no day 30 yet
    late = df["exposure_ts"] + 31 * DAY_MS > as_of
    assert late.any() and not df.loc[late, "matured"].any()
    assert df.loc[~late, "matured"].all()


def test_calibrate_cli_table_json_and_config_fragment(
        calibration_store: tuple[str, int], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    dsn, as_of = calibration_store
    common = ["calibrate", "--dsn", dsn, "--as-of-ms", str(as_of), "--min-units", "100"]
    assert main([*common, "--json", "--bootstrap", "100"]) == 0
    doc = json.loads(capsys.readouterr().out)
    truth = {"retry": 0.75, "rating": 0.25, "length": 0.0}
    for p, a in truth.items():
        lo, hi = doc["alpha_ci"][p]
        assert lo - 1e-9 <= a <= hi + 1e-9, (p, doc["alpha_ci"])
    assert doc["n_units"] > 100 and doc["outcome"] == "day30_engagement"
    assert 0 < doc["r2_oof"] < 1 and doc["meta"]["experiments"] == ["exp-cal"]
    frag = tmp_path / "reward.toml"
    assert main([*common, "--write-config", str(frag)]) == 0
    out = capsys.readouterr().out
    assert "surrogate index of day30_engagement" in out and "out-of-fold R²" in out
    assert "[reward]" in out and "calibration" in out
    cfg = load_config(frag, env={})
    assert cfg.reward.alpha_retry > cfg.reward.alpha_rating > cfg.reward.alpha_length
    assert cfg.reward.alpha_retry + cfg.reward.alpha_rating + cfg.reward.alpha_length \
        == pytest.approx(1.0, abs=1e-3)
    # an existing file is never overwritten
    assert main([*common, "--write-config", str(frag)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--as-of-ms", str(START_MS + 20 * DAY_MS)], "too few matured users"),
        (["--proxies", "retry,clicks"], "proxies must be distinct names"),
        (["--outcome", "day99_engagement"], "outcome must be one of"),
        (["--window-days", "40"], "window_days must be an integer in [1, 30]"),
        (["--experiment", "exp-nope"], "no user with a decision in the early window"),
    ],
    ids=["not-matured", "unknown-proxy", "unknown-outcome", "window", "unknown-experiment"],
)
def test_calibrate_cli_bad_input_exits_2_without_traceback(
        calibration_store: tuple[str, int], capsys: pytest.CaptureFixture[str],
        extra: list[str], words: str) -> None:
    dsn, as_of = calibration_store
    args = ["calibrate", "--dsn", dsn, "--as-of-ms", str(as_of), *extra]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert words in err and "Traceback" not in err


def test_lift_cli_projection_is_labelled_and_beside_the_measurement(
        calibration_store: tuple[str, int], capsys: pytest.CaptureFixture[str]) -> None:
    dsn, as_of = calibration_store
    args = ["lift", "--experiment", "exp-cal", "--dsn", dsn, "--as-of-ms", str(as_of),
            "--projection"]
    assert main([*args, "--json"]) == 0
    proj = json.loads(capsys.readouterr().out)["projection"]
    (row,) = proj["rows"]
    assert row["variant"] == "bandit" and row["ci_low"] <= row["projected_lift"] <= row["ci_high"]
    # both arms share one distribution of users: no lift, measured or projected
    assert row["ci_low"] < 0 < row["ci_high"]
    assert "surrogacy" in proj["note"] and row["measured_minus_projected"] is not None
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "projected lift of bandit from days 0-6" in out and "not a measurement" in out


def test_projection_history_fits_each_index_on_the_other_experiments(
        tmp_path: Path) -> None:
    """Two experiments: each one's day-7 projection uses an index fitted on the other's
    matured users only, and stands beside the lift its own matured users measured (the
    same users, Fieller interval); before day 30 nothing is checked, in words."""
    from bandit.analysis.calibration import projection_history
    from bandit.stats import relative_lift

    dsn = f"chdb://{tmp_path / 'chdb'}"
    with open_store(dsn) as s:
        seqs = np.random.SeedSequence(SEED + 7).spawn(2)
        as_of = write_store(s, seqs[0], 400, experiment_id="exp-a")
        write_store(s, seqs[1], 400, experiment_id="exp-b")
    with open_store(dsn, read_only=True) as s:
        h = projection_history(s, "gpt35", as_of_ms=as_of)
        units = load_units(s, ["exp-a", "exp-b"], as_of_ms=as_of).matured
        young = projection_history(s, "gpt35", as_of_ms=START_MS + 20 * DAY_MS)
    assert h.rows["experiment_id"].tolist() == ["exp-a", "exp-b"] and not h.notes
    for r in h.rows.itertuples():
        mine = units[units["experiment_id"] == r.experiment_id]
        assert r.calibrated_on == "other experiments"
        assert r.calibration_units == int((units["experiment_id"] != r.experiment_id).sum())
        y = {v: mine.loc[mine["variant"] == v, "day30_engagement"].to_numpy() for v in ("bandit", "gpt35")}
        m = relative_lift(y["bandit"], y["gpt35"])
        assert r.measured_lift == pytest.approx(m.estimate)
        assert (r.n, r.n_control) == (len(y["bandit"]), len(y["gpt35"]))
        assert r.gap == pytest.approx(r.measured_lift - r.projected_lift)
        assert r.covered == (r.ci_low <= r.measured_lift <= r.ci_high)
        # one population in both arms: no lift, projected or measured
        assert r.ci_low < 0 < r.ci_high
    assert 0 <= h.coverage <= 1 and np.isfinite(h.mean_gap()).all()
    assert young.rows.empty and len(young.notes) == 2 and "no matured" in young.notes[0]
    assert np.isnan(young.coverage)


def test_projection_resamples_in_bounded_chunks_with_the_same_draws(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Users are resampled in chunks of bounded memory (the index's bootstrap and the
    cohorts'); chunking changes no draw, so the fit's bootstrap and the projection's
    interval are the same as in one block."""
    from bandit.analysis import calibration as C

    seqs = np.random.SeedSequence(SEED + 8).spawn(3)
    users = linear_users(seqs[0], 600)
    cal = calibrate(users, seed=0, flexible=False, n_bootstrap=50)
    t, c = linear_users(seqs[1], 300), linear_users(seqs[2], 300)
    whole = C.project_lift(cal, t, c, seed=3)
    monkeypatch.setattr(C, "_RESAMPLE_CELLS", 700)  # 2 cohort draws a chunk, 1 for the fit
    chunked = calibrate(users, seed=0, flexible=False, n_bootstrap=50)
    np.testing.assert_allclose(chunked.boot_params, cal.boot_params, rtol=1e-9)
    again = C.project_lift(cal, t, c, seed=3)
    # the same draws; chunked sums may round differently in the last bit
    for f in ("n", "n_control", "level"):
        assert getattr(again, f) == getattr(whole, f)
    for f in ("index_mean", "index_mean_control", "lift", "ci_low", "ci_high", "se"):
        assert getattr(again, f) == pytest.approx(getattr(whole, f), rel=1e-12), f
    assert whole.ci_low < whole.lift < whole.ci_high
