"""A simulated chat platform with ground truth, for policy comparison and OPE validation.

Model (all randomness from explicit :class:`numpy.random.Generator` objects):

* **Users** have latent preferences ``w_u`` over ``k`` dimensions (role-play, creative,
  informative, fun, ...), drawn from a Dirichlet.
* **Conversations** of user ``u`` have a topic ``t = w_u + noise`` on the simplex-ish and
  an embedding ``x_C = [1, P t + ε]`` (dimension ``d``; ``P`` is a random ``(d-1) × k``
  projection, the leading 1 is an intercept so per-arm quality is learnable).
* **Arms** — experts (specialists strong on one dimension, generalists) and GPT-3.5
  baselines — carry ``θ_m = P s_m`` in the same space plus a base quality ``q_m``.
  Experts arrive and retire on given days; every arm's quality drifts (a per-day random
  walk, fixed by the world seed).
* **Fit** ``z = γ · s_m·t' + q_m + drift_m(day)`` where ``t'`` is the noisy topic;
  message-level proxies are drawn from it: ``retried ~ Bern(1 - σ(z))``,
  ``rating = 1 + Binomial(4, σ(z - 0.3))`` (observed with probability
  ``rating_rate``), ``conversation_length ~ Binomial(cap, σ(z - 0.5))``. So the
  expected reward under :func:`bandit.reward.reward_from_proxies` is known exactly and
  :meth:`World.expected_rewards` returns it for every arm at every step (exact regret).
* **Engagement**: day ``t`` screen time of a user who was served arms of mean true
  expected reward ``q̄`` (running mean up to that day) is
  ``Bern(σ(a_u - t/τ + β_r c Δ)) · Gamma(mean = s_u exp(β c Δ))`` with
  ``Δ = q̄ - q_ref``. The scale ``c`` of a named scenario is solved (Brent) so that the
  day-30 engagement of the *expert mixture* (oracle routing: best active arm per
  conversation) over GPT-3.5-only routing is exactly the planted lift
  (:func:`planted_lift`), e.g. +20% (``lift20``) or +68% (``lift68``).
* **True long-term value** (what engagement responds to, :meth:`World.true_values`):
  ``v = Σ_j w_j μ_j / Σ_j w_j`` over the proxies' expectations *without bait*
  (``μ_retry = σ(z)``, ``μ_rating = σ(z - 0.3)``, ``μ_length = σ(z - 0.5)``) with the
  scenario's ``value_weights`` w; by default w is the default reward's α's and the value
  is exactly the expected default reward. A scenario may plant **length-bait** experts
  (``bait_experts``): chatty generalists whose conversations run ``bait_length`` logits
  longer — their length proxy rises, their value does not — and rate lower
  (``bait_rating``); ``length_gain`` sets how much length follows z. In ``misaligned``
  (``w_length = 0``) the default α's reward the bait, calibrated α's do not
  (docs/calibration.md). ``hidden_value`` adds value to specialists that no proxy shows:
  the surrogacy-violating scenario (``hidden``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit

from bandit.arms import Arm, ArmRegistry
from bandit.config import RewardConfig
from bandit.errors import InvalidInputError
from bandit.events import EngagementEvent
from simulations.logs import LoggedData, RewardProxies

__all__ = [
    "DIMENSIONS",
    "SCENARIOS",
    "ArmSpec",
    "Cohort",
    "CohortRouter",
    "PolicyRouter",
    "Proxies",
    "Scenario",
    "World",
    "make_world",
    "planted_lift",
    "random_router",
    "simulate_cohort",
    "simulate_log",
]

_DEFAULT_REWARD: Final = RewardConfig()
DIMENSIONS: Final = ("role-play", "creative", "informative", "fun", "romance", "advice")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
#: A routing rule for engagement simulation: (world, X, topics, day) -> arm index per row.
Router = Callable[["World", FloatArray, FloatArray, int], IntArray]


@dataclass(frozen=True)
class Scenario:
    """Frozen parameters of a world. ``target_lift`` (if set) is planted by solving ``c``."""

    name: str = "default"
    dim: int = 32
    n_dims: int = 6
    n_specialists: int = 8
    n_generalists: int = 3
    n_baselines: int = 1
    fit_gain: float = 4.0
    specialist_quality: float = -2.5
    generalist_quality: float = -2.0
    baseline_quality: float = -1.8
    topic_noise: float = 0.15
    context_noise: float = 0.05
    drift_sd: float = 0.02
    rating_rate: float = 0.3
    #: fraction of experts that arrive late / retire early (within the horizon)
    churn: float = 0.25
    horizon_days: int = 45
    preference_concentration: float = 0.4
    target_lift: float | None = None
    engagement_beta: float = 1.0
    retention_beta: float = 0.5
    retention_tau_days: float = 40.0
    #: weights (retry, rating, length) of the true long-term value over the proxies'
    #: un-baited expectations; None: the default reward's α's (value = expected reward)
    value_weights: tuple[float, float, float] | None = None
    #: chatty experts whose length proxy is inflated by ``bait_length`` logits
    bait_experts: int = 0
    bait_length: float = 0.0
    #: logit added to the bait experts' rating (users who were kept talking rate lower)
    bait_rating: float = 0.0
    bait_quality: float = -2.0
    #: how strongly the length proxy follows the fit z (1: as retry and rating do)
    length_gain: float = 1.0
    #: value no proxy shows, added to every specialist's (surrogacy fails)
    hidden_value: float = 0.0

    def __post_init__(self) -> None:
        if self.dim < self.n_dims + 1:
            raise InvalidInputError("dim", self.dim, f"must be >= n_dims + 1 = {self.n_dims + 1}")
        if self.n_baselines < 1:
            raise InvalidInputError("n_baselines", self.n_baselines, "must be >= 1")
        if not 0.0 <= self.rating_rate <= 1.0:
            raise InvalidInputError("rating_rate", self.rating_rate, "must be in [0, 1]")
        if self.horizon_days < 31:
            raise InvalidInputError("horizon_days", self.horizon_days, "must be >= 31")
        if self.target_lift is not None and not self.target_lift > 0:
            raise InvalidInputError("target_lift", self.target_lift, "must be > 0")
        if self.value_weights is not None and (
                len(self.value_weights) != 3 or min(self.value_weights) < 0
                or sum(self.value_weights) <= 0):
            raise InvalidInputError("value_weights", self.value_weights,
                                    "must be three weights >= 0 (retry, rating, length), "
                                    "not all zero")
        if self.bait_experts < 0:
            raise InvalidInputError("bait_experts", self.bait_experts, "must be >= 0")


SCENARIOS: Final[dict[str, Scenario]] = {
    "default": Scenario(),
    "lift20": Scenario(name="lift20", target_lift=0.20),
    "lift68": Scenario(name="lift68", target_lift=0.68, n_specialists=12),
    "small": Scenario(name="small", dim=16, n_specialists=4, n_generalists=1, horizon_days=31),
    # the default α's reward length; chatty bait experts inflate it without value
    "misaligned": Scenario(name="misaligned", target_lift=0.40, value_weights=(0.5, 0.5, 0.0),
                           bait_experts=3, bait_length=3.0, bait_rating=-2.0,
                           bait_quality=-1.6, length_gain=0.25, churn=0.0),
    # specialists carry value no proxy shows: a surrogate index misses it
    "hidden": Scenario(name="hidden", target_lift=0.20, hidden_value=0.08, churn=0.0),
}


@dataclass(frozen=True)
class ArmSpec:
    arm_id: str
    kind: str
    strengths: tuple[float, ...]
    quality: float
    arrive_day: int
    retire_day: int


@dataclass(frozen=True)
class Proxies:
    """Sampled message-level proxies (``rating`` is 0 where not observed)."""

    retried: npt.NDArray[np.bool_]
    rating: IntArray
    conversation_length: IntArray
    reward: FloatArray

    def reward_under(self, rc: RewardConfig) -> FloatArray:
        """The reward these proxies give under ``rc`` (:func:`bandit.reward.reward_from_proxies`
        semantics, vectorised): what a bandit learning with other α's sees."""
        observed = self.rating > 0
        num = (rc.alpha_retry * (~self.retried)
               + rc.alpha_length * np.minimum(self.conversation_length, rc.length_cap)
               / rc.length_cap)
        den = np.full(self.retried.shape[0], rc.alpha_retry + rc.alpha_length)
        num = num + np.where(observed, rc.alpha_rating * (self.rating - 1) / 4.0, 0.0)
        den = den + np.where(observed, rc.alpha_rating, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out: FloatArray = np.where(den > 0, num / np.where(den > 0, den, 1.0),
                                       rc.default_reward)
        return out


@dataclass
class World:
    """Ground-truth simulator. Build with :func:`make_world`; immutable after construction."""

    scenario: Scenario
    reward_config: RewardConfig
    projection: FloatArray  # (d-1, k)
    strengths: FloatArray  # (K, k)
    quality: FloatArray  # (K,)
    drift: FloatArray  # (horizon_days, K)
    arms: tuple[ArmSpec, ...]
    engagement_scale: float = 1.0
    _baselines: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: per-arm logit added to the length proxy only (bait experts: no value), shape (K,)
    bait: FloatArray = field(default_factory=lambda: np.zeros(0))
    #: per-arm logit added to the rating proxy (and to the value it carries), shape (K,)
    rating_offset: FloatArray = field(default_factory=lambda: np.zeros(0))
    #: per-arm value no proxy shows, shape (K,)
    hidden: FloatArray = field(default_factory=lambda: np.zeros(0))

    # ------------------------------------------------------------------ arms
    @property
    def n_arms(self) -> int:
        return len(self.arms)

    @property
    def arm_ids(self) -> tuple[str, ...]:
        return tuple(a.arm_id for a in self.arms)

    @property
    def dim(self) -> int:
        return self.scenario.dim

    @property
    def baseline_index(self) -> IntArray:
        return self._baselines

    def active_mask(self, day: int) -> npt.NDArray[np.bool_]:
        return np.array([a.arrive_day <= day < a.retire_day for a in self.arms])

    def registry(self, day: int | None = None) -> ArmRegistry:
        """An :class:`ArmRegistry` of all arms (judge scores as content features)."""
        reg = ArmRegistry(feature_dim=self.scenario.n_dims)
        for i, a in enumerate(self.arms):
            active = True if day is None else bool(self.active_mask(day)[i])
            reg.add(Arm(a.arm_id, kind="baseline" if a.kind == "baseline" else "expert",
                        features=a.strengths, active=active))
        return reg

    # ------------------------------------------------------------------ contexts
    def sample_users(self, rng: np.random.Generator, n: int) -> FloatArray:
        """Latent preferences of ``n`` new users, shape (n, k)."""
        k = self.scenario.n_dims
        return rng.dirichlet(np.full(k, self.scenario.preference_concentration), size=n)

    def sample_conversations(
        self, rng: np.random.Generator, preferences: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """One conversation per row of ``preferences``: (contexts (n, d), topics (n, k))."""
        sc = self.scenario
        topics = preferences + sc.topic_noise * rng.standard_normal(preferences.shape)
        n = preferences.shape[0]
        x = np.empty((n, sc.dim))
        x[:, 0] = 1.0
        x[:, 1:] = topics @ self.projection.T + sc.context_noise * rng.standard_normal(
            (n, sc.dim - 1)
        )
        return x, topics

    def sample_contexts(
        self, rng: np.random.Generator, n: int
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """``n`` conversations of fresh users: (preferences, contexts, topics)."""
        prefs = self.sample_users(rng, n)
        x, topics = self.sample_conversations(rng, prefs)
        return prefs, x, topics

    # ------------------------------------------------------------------ ground truth
    def fit(self, topics: FloatArray, day: int) -> FloatArray:
        """Latent fit z of every arm to every conversation, shape (n, K)."""
        day = int(np.clip(day, 0, self.scenario.horizon_days - 1))
        return (
            self.scenario.fit_gain * topics @ self.strengths.T
            + self.quality
            + self.drift[day]
        )

    def expected_rewards(self, topics: FloatArray, day: int) -> FloatArray:
        """E[reward | conversation, arm] for every arm (n, K), reward_from_proxies semantics."""
        return self._expected_from_fit(self.fit(topics, day))

    def _expected_from_fit(self, z: FloatArray, rc: RewardConfig | None = None,
                           bait: bool = True) -> FloatArray:
        rc = rc or self.reward_config
        rho = self.scenario.rating_rate
        offset = self.bait if bait and self.bait.size else 0.0
        r_off = self.rating_offset if self.rating_offset.size else 0.0
        g = self.scenario.length_gain
        p_ok, p_rate, p_len = expit(z), expit(z - 0.3 + r_off), expit(g * z - 0.5 + offset)
        full_w = rc.alpha_retry + rc.alpha_rating + rc.alpha_length
        part_w = rc.alpha_retry + rc.alpha_length
        full = (rc.alpha_retry * p_ok + rc.alpha_rating * p_rate + rc.alpha_length * p_len) / full_w
        part = (rc.alpha_retry * p_ok + rc.alpha_length * p_len) / part_w
        out: FloatArray = rho * full + (1.0 - rho) * part
        return out

    def expected_rewards_under(self, topics: FloatArray, day: int,
                               rc: RewardConfig) -> FloatArray:
        """E[reward | conversation, arm] (n, K) for a learner rewarding with ``rc``."""
        return self._expected_from_fit(self.fit(topics, day), rc)

    def true_values(self, topics: FloatArray, day: int) -> FloatArray:
        """True long-term value of every arm for every conversation (n, K): what the
        users' engagement responds to (see the module docstring)."""
        z = self.fit(topics, day)
        w = self.scenario.value_weights
        if w is None:
            v = self._expected_from_fit(z, _DEFAULT_REWARD, bait=False)
        else:
            r_off = self.rating_offset if self.rating_offset.size else 0.0
            g = self.scenario.length_gain
            v = (w[0] * expit(z) + w[1] * expit(z - 0.3 + r_off)
                 + w[2] * expit(g * z - 0.5)) / sum(w)
        if self.hidden.size:
            v = v + self.hidden
        return v

    def sample_proxies(
        self, rng: np.random.Generator, topics: FloatArray, arm_index: npt.ArrayLike, day: int
    ) -> Proxies:
        """Draw proxies (and the reward they give) for the chosen arm of each row."""
        idx = np.asarray(arm_index, dtype=np.int64)
        n = topics.shape[0]
        if idx.shape != (n,):
            raise InvalidInputError("arm_index", idx.shape, f"must have shape ({n},)")
        if n and (idx.min() < 0 or idx.max() >= self.n_arms):
            raise InvalidInputError("arm_index", int(idx.max()), f"must be in [0, {self.n_arms})")
        z = self.fit(topics, day)[np.arange(n), idx]
        rc = self.reward_config
        retried = rng.random(n) >= expit(z)
        r_off = self.rating_offset[idx] if self.rating_offset.size else 0.0
        rating = 1 + rng.binomial(4, expit(z - 0.3 + r_off))
        observed = rng.random(n) < self.scenario.rating_rate
        rating = np.where(observed, rating, 0)
        offset = self.bait[idx] if self.bait.size else 0.0
        length = rng.binomial(rc.length_cap, expit(self.scenario.length_gain * z - 0.5 + offset))
        # Same arithmetic as bandit.reward.reward_from_proxies, vectorised.
        num = (rc.alpha_retry * (~retried)
               + rc.alpha_length * np.minimum(length, rc.length_cap) / rc.length_cap)
        den = np.full(n, rc.alpha_retry + rc.alpha_length)
        num = num + np.where(observed, rc.alpha_rating * (rating - 1) / 4.0, 0.0)
        den = den + np.where(observed, rc.alpha_rating, 0.0)
        return Proxies(retried, rating.astype(np.int64), length.astype(np.int64), num / den)

    # ------------------------------------------------------------------ routers
    def oracle_router(self, x: FloatArray, topics: FloatArray, day: int) -> IntArray:
        """Best active arm per conversation by true value (the 'expert mixture' of the
        planted lift)."""
        mu = self.true_values(topics, day)
        mu = np.where(self.active_mask(day), mu, -np.inf)
        return np.asarray(np.argmax(mu, axis=1), dtype=np.int64)

    def baseline_router(self, x: FloatArray, topics: FloatArray, day: int) -> IntArray:
        """GPT-3.5 only: the best baseline arm (the control variant)."""
        mu = self.expected_rewards(topics, day)[:, self._baselines]
        return self._baselines[np.argmax(mu, axis=1)]

    # ------------------------------------------------------------------ engagement
    def day_engagement_mean(
        self, user_base: FloatArray, user_activity: FloatArray, quality: FloatArray, day: int
    ) -> FloatArray:
        """Expected screen time (s) on ``day`` given running mean served quality."""
        sc, c = self.scenario, self.engagement_scale
        delta = quality - self.reference_quality
        p_active = expit(
            user_activity - day / sc.retention_tau_days + sc.retention_beta * c * delta
        )
        out: FloatArray = p_active * user_base * np.exp(sc.engagement_beta * c * delta)
        return out

    reference_quality: float = 0.5

    def sample_user_traits(
        self, rng: np.random.Generator, n: int
    ) -> tuple[FloatArray, FloatArray]:
        """Per-user engagement traits: (base screen time in s, activity logit)."""
        return rng.gamma(4.0, 300.0 / 4.0, size=n), rng.normal(1.5, 0.5, size=n)

    def sample_engagement(
        self, rng: np.random.Generator, user_base: FloatArray, user_activity: FloatArray,
        quality: FloatArray, day: int,
    ) -> tuple[npt.NDArray[np.bool_], FloatArray, IntArray]:
        """One day of engagement per user: (active, screen_time_s, messages).

        ``quality`` is each user's running mean true expected reward of the arms served;
        ``day`` counts from the user's first day. E[screen_time] = day_engagement_mean.
        """
        sc = self.scenario
        p_active = expit(user_activity - day / sc.retention_tau_days
                         + sc.retention_beta * self.engagement_scale
                         * (quality - self.reference_quality))
        mean = self.day_engagement_mean(user_base, user_activity, quality, day)
        cond = mean / np.maximum(p_active, 1e-12)
        active = rng.random(user_base.shape[0]) < p_active
        screen = np.where(active, np.minimum(rng.gamma(2.0, cond / 2.0), 86_400.0), 0.0)
        msgs = np.where(active, rng.poisson(cond / 30.0), 0).astype(np.int64)
        return active, screen, msgs

    def engagement_events(
        self, rng: np.random.Generator, unit_ids: Sequence[str], user_base: FloatArray,
        user_activity: FloatArray, quality: FloatArray, day: int, ts_ms: int,
    ) -> list[EngagementEvent]:
        """:class:`EngagementEvent` s of the users active on ``day`` (for traffic generators)."""
        active, screen, msgs = self.sample_engagement(rng, user_base, user_activity, quality,
                                                      day)
        return [
            EngagementEvent(event_id=f"eng-{unit_ids[i]}-{day}-{ts_ms}", ts_ms=ts_ms,
                            unit_id=unit_ids[i], screen_time_s=float(screen[i]),
                            messages=int(msgs[i]))
            for i in np.flatnonzero(active)
        ]

    def simulate_engagement(
        self,
        rng: np.random.Generator,
        n_users: int,
        router: Router,
        *,
        days: int = 31,
        conversations_per_day: int = 2,
    ) -> dict[str, FloatArray]:
        """Day-by-day engagement of ``n_users`` new users served by ``router``.

        Returns arrays ``screen_time`` (n_users, days), ``messages`` (n_users, days) and
        ``quality`` (n_users, days, running mean true expected reward of served arms).
        """
        if n_users < 1:
            raise InvalidInputError("n_users", n_users, "must be >= 1")
        if not 1 <= days <= self.scenario.horizon_days:
            raise InvalidInputError("days", days, f"must be in [1, {self.scenario.horizon_days}]")
        prefs = self.sample_users(rng, n_users)
        base, activity = self.sample_user_traits(rng, n_users)
        qsum = np.zeros(n_users)
        count = 0
        screen = np.zeros((n_users, days))
        msgs = np.zeros((n_users, days))
        qual = np.zeros((n_users, days))
        for day in range(days):
            for _ in range(conversations_per_day):
                x, topics = self.sample_conversations(rng, prefs)
                arm = router(self, x, topics, day)
                qsum += self.true_values(topics, day)[np.arange(n_users), arm]
                count += 1
            q = qsum / count
            _, screen[:, day], msgs[:, day] = self.sample_engagement(rng, base, activity, q, day)
            qual[:, day] = q
        return {"screen_time": screen, "messages": msgs, "quality": qual}

    def expected_day30(
        self, router: Router, *, n_users: int = 5_000, seed: int = 20261123
    ) -> float:
        """Monte-Carlo day-30 expected screen time under ``router`` (fixed seed, no sampling
        noise in the engagement draw itself)."""
        q, base, activity = self._user_quality(router, n_users, seed)
        return float(np.mean(self.day_engagement_mean(base, activity, q, 30)))

    def _user_quality(
        self, router: Router, n_users: int, seed: int, conversations: int = 31
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        rng = np.random.default_rng(seed)
        prefs = self.sample_users(rng, n_users)
        base, activity = self.sample_user_traits(rng, n_users)
        qsum = np.zeros(n_users)
        for i in range(conversations):
            day = i * 31 // conversations
            x, topics = self.sample_conversations(rng, prefs)
            arm = router(self, x, topics, day)
            qsum += self.true_values(topics, day)[np.arange(n_users), arm]
        return qsum / conversations, base, activity


def _oracle(world: World, x: FloatArray, topics: FloatArray, day: int) -> IntArray:
    return world.oracle_router(x, topics, day)


def _baseline(world: World, x: FloatArray, topics: FloatArray, day: int) -> IntArray:
    return world.baseline_router(x, topics, day)


def make_world(
    scenario: str | Scenario = "default",
    seed: int | np.random.SeedSequence = 0,
    *,
    reward_config: RewardConfig | None = None,
) -> World:
    """Build the world of a named scenario; ``seed`` fixes arms, projection and drift.

    Worlds of named scenarios with an integer seed and the default reward config are
    cached (they are immutable after construction; calibrating a planted lift is costly).
    """
    if isinstance(scenario, str) and isinstance(seed, int) and reward_config is None:
        return _cached_world(scenario, seed)
    return _build_world(scenario, seed, reward_config=reward_config)


@functools.lru_cache(maxsize=16)
def _cached_world(scenario: str, seed: int) -> World:
    return _build_world(scenario, seed, reward_config=None)


def _build_world(
    scenario: str | Scenario,
    seed: int | np.random.SeedSequence,
    *,
    reward_config: RewardConfig | None,
) -> World:
    if isinstance(scenario, str):
        try:
            scenario = SCENARIOS[scenario]
        except KeyError:
            raise InvalidInputError(
                "scenario", scenario, f"must be one of {sorted(SCENARIOS)}"
            ) from None
    rng = np.random.default_rng(seed)
    sc = scenario
    k = sc.n_dims
    proj, _ = np.linalg.qr(rng.standard_normal((sc.dim - 1, k)))
    specs: list[ArmSpec] = []
    strengths: list[FloatArray] = []
    quality: list[float] = []
    for b in range(sc.n_baselines):
        s = np.full(k, 0.5)
        specs.append(ArmSpec(f"gpt35-{b}" if sc.n_baselines > 1 else "gpt35", "baseline",
                             tuple(s), sc.baseline_quality, 0, sc.horizon_days))
        strengths.append(s)
        quality.append(sc.baseline_quality)
    n_exp = sc.n_specialists + sc.n_generalists + sc.bait_experts
    churned = rng.permutation(n_exp)[: round(sc.churn * n_exp)]
    late, early = set(churned[::2].tolist()), set(churned[1::2].tolist())
    for j in range(n_exp):
        if j < sc.n_specialists:
            s = np.full(k, 0.0)
            s[j % k] = 1.6 + 0.2 * rng.random()
            s += 0.1 * rng.random(k)
            q, kind = sc.specialist_quality + 0.1 * rng.standard_normal(), "specialist"
        elif j < sc.n_specialists + sc.n_generalists:
            s = 0.55 + 0.1 * rng.random(k)
            q, kind = sc.generalist_quality + 0.1 * rng.standard_normal(), "generalist"
        else:
            s = 0.55 + 0.1 * rng.random(k)
            q, kind = sc.bait_quality + 0.1 * rng.standard_normal(), "chatty"
        arrive, retire = 0, sc.horizon_days
        if j in late:
            arrive = int(rng.integers(1, sc.horizon_days // 2))
        elif j in early:
            retire = int(rng.integers(sc.horizon_days // 2, sc.horizon_days))
        specs.append(ArmSpec(f"{kind}-{j:02d}", kind, tuple(float(v) for v in s), float(q),
                             arrive, retire))
        strengths.append(s)
        quality.append(float(q))
    n_arms = len(specs)
    drift = np.cumsum(sc.drift_sd * rng.standard_normal((sc.horizon_days, n_arms)), axis=0)
    drift[:, : sc.n_baselines] = 0.0
    kinds = [a.kind for a in specs]
    world = World(
        bait=np.array([sc.bait_length if kd == "chatty" else 0.0 for kd in kinds]),
        rating_offset=np.array([sc.bait_rating if kd == "chatty" else 0.0 for kd in kinds]),
        hidden=np.array([sc.hidden_value if kd == "specialist" else 0.0 for kd in kinds]),
        scenario=sc,
        reward_config=reward_config or RewardConfig(),
        projection=proj,
        strengths=np.asarray(strengths),
        quality=np.asarray(quality),
        drift=drift,
        arms=tuple(specs),
        _baselines=np.arange(sc.n_baselines, dtype=np.int64),
    )
    q_ref_users = world._user_quality(_baseline, 2000, 1)[0]
    world.reference_quality = float(np.mean(q_ref_users))
    if sc.target_lift is not None:
        target = sc.target_lift
        qo, base, act = world._user_quality(_oracle, 5_000, 20261123)
        qb, _, _ = world._user_quality(_baseline, 5_000, 20261123)

        def gap(c: float) -> float:
            world.engagement_scale = c
            e_o = np.mean(world.day_engagement_mean(base, act, qo, 30))
            e_b = np.mean(world.day_engagement_mean(base, act, qb, 30))
            return float(e_o / e_b - 1.0 - target)

        world.engagement_scale = float(brentq(gap, 1e-6, 50.0, xtol=1e-10))
    return world


def planted_lift(world_or_scenario: World | str | Scenario, seed: int = 0) -> float:
    """Day-30 engagement lift of the expert mixture (oracle routing) over GPT-3.5.

    For scenarios with ``target_lift`` this equals the target (to Brent tolerance) on the
    planted user population.
    """
    world = (
        world_or_scenario
        if isinstance(world_or_scenario, World)
        else make_world(world_or_scenario, seed)
    )
    return world.expected_day30(_oracle) / world.expected_day30(_baseline) - 1.0


def simulate_log(
    world: World,
    rng: np.random.Generator,
    n: int,
    *,
    logger: Callable[[FloatArray], FloatArray] | None = None,
    day: int = 0,
) -> tuple[LoggedData, FloatArray]:
    """Log ``n`` decisions of ``logger`` (contexts -> (n, K) probabilities; None = uniform).

    Returns the log (with each event's reward proxies, ``LoggedData.proxies``) and the
    true expected reward of every arm for every event (n, K), so estimators can be
    checked against ground truth.
    """
    if n < 1:
        raise InvalidInputError("n", n, "must be >= 1")
    _, x, topics = world.sample_contexts(rng, n)
    k = world.n_arms
    probs = np.full((n, k), 1.0 / k) if logger is None else np.asarray(logger(x), dtype=float)
    if probs.shape != (n, k):
        raise InvalidInputError("logger", probs.shape, f"must return shape ({n}, {k})")
    cum = np.cumsum(probs, axis=1)
    arm = np.minimum((rng.random((n, 1)) > cum).sum(axis=1), k - 1).astype(np.int64)
    prox = world.sample_proxies(rng, topics, arm, day)
    data = LoggedData(
        arm_ids=world.arm_ids, contexts=x, arm_index=arm,
        propensity=probs[np.arange(n), arm], reward=prox.reward,
        probabilities=None if logger is None else probs,
        proxies=RewardProxies(prox.retried.astype(np.float64),
                              np.where(prox.rating > 0, prox.rating, np.nan),
                              prox.conversation_length.astype(np.float64)),
    )
    return data, world.expected_rewards(topics, day)


# ---------------------------------------------------------------------- cohorts


class CohortRouter(Protocol):
    """Routes a day of conversations, and (for a learner) learns from their proxies."""

    def choose(self, world: World, x: FloatArray, topics: FloatArray, day: int,
               rng: np.random.Generator) -> IntArray: ...

    def learn(self, world: World, arms: IntArray, x: FloatArray, proxies: Proxies) -> None: ...


@dataclass
class _FnRouter:
    fn: Callable[[World, FloatArray, FloatArray, int, np.random.Generator], IntArray]

    def choose(self, world: World, x: FloatArray, topics: FloatArray, day: int,
               rng: np.random.Generator) -> IntArray:
        return self.fn(world, x, topics, day, rng)

    def learn(self, world: World, arms: IntArray, x: FloatArray, proxies: Proxies) -> None:
        return None


def _random(world: World, x: FloatArray, topics: FloatArray, day: int,
            rng: np.random.Generator) -> IntArray:
    active = np.flatnonzero(world.active_mask(day))
    return np.asarray(active[rng.integers(0, active.size, size=x.shape[0])], dtype=np.int64)


#: uniform over the active arms (a past "uniform" variant: what calibration learns from)
random_router: Final[CohortRouter] = _FnRouter(_random)
#: GPT-3.5 only (the control variant)
baseline_cohort_router: Final[CohortRouter] = _FnRouter(
    lambda w, x, t, d, rng: w.baseline_router(x, t, d))
#: best active arm by true value (the planted expert mixture)
oracle_cohort_router: Final[CohortRouter] = _FnRouter(
    lambda w, x, t, d, rng: w.oracle_router(x, t, d))


class PolicyRouter:
    """A learning policy (:func:`bandit.policies.make_policy`) rewarded with ``reward``'s
    α's: it draws each conversation's arm from the policy's distribution over the active
    arms and learns a day's feedback at the end of the day (a delayed, batched stream)."""

    def __init__(self, world: World, reward: RewardConfig, *, policy: str = "linucb",
                 alpha: float = 0.3, probability_floor: float = 0.01) -> None:
        from bandit.config import PolicyConfig
        from bandit.policies import make_policy

        self.reward = reward
        self.registry = world.registry(day=0)
        cfg = PolicyConfig(name=policy, dim=world.dim, alpha=alpha,  # type: ignore[arg-type]
                           probability_floor=probability_floor, fixed_arm=world.arm_ids[0])
        self.policy: Any = make_policy(cfg, self.registry)
        self._pos = {a: i for i, a in enumerate(world.arm_ids)}

    def choose(self, world: World, x: FloatArray, topics: FloatArray, day: int,
               rng: np.random.Generator) -> IntArray:
        mask = world.active_mask(day)
        eligible = [a for a, m in zip(world.arm_ids, mask, strict=True) if m]
        arms, probs = self.policy.probabilities_batch(x, rng, eligible)
        cum = np.cumsum(probs, axis=1)
        pick = np.minimum((rng.random((x.shape[0], 1)) > cum).sum(axis=1), len(arms) - 1)
        return np.array([self._pos[arms[j]] for j in pick], dtype=np.int64)

    def learn(self, world: World, arms: IntArray, x: FloatArray, proxies: Proxies) -> None:
        ids = [world.arm_ids[i] for i in arms]
        self.policy.update_batch(ids, x, proxies.reward_under(self.reward))


@dataclass(frozen=True)
class Cohort:
    """Users followed from their first day to day 30, and what the simulator knows.

    ``proxies``: per user, the early-window (days 0 .. window-1) mean of each normalised
    proxy (``retry``, ``rating`` — NaN for a user with no rating —, ``length``);
    ``screen_time_d30``: the sampled day-30 screen time (the measured outcome);
    ``expected_d30``: its expectation given the arms served (the planted truth);
    ``value``: the mean true value of the arms served over the 31 days.
    """

    proxies: dict[str, FloatArray]
    screen_time_d30: FloatArray
    expected_d30: FloatArray
    value: FloatArray
    window_days: int

    def units(self, prefix: str = "u") -> pd.DataFrame:
        """One row per user: unit_id, ``proxy_<name>``, ``outcome`` (the sampled day-30
        screen time) and ``expected_outcome`` — the frame
        :func:`bandit.analysis.calibration.calibrate` takes (ratings filled as the store
        loader fills them)."""
        from bandit.analysis.calibration import fill_unobserved, proxy_column

        n = self.screen_time_d30.shape[0]
        df = pd.DataFrame({"unit_id": [f"{prefix}{i}" for i in range(n)]})
        for name, v in self.proxies.items():
            df[proxy_column(name)] = v
        fill_unobserved(df)
        df["outcome"] = self.screen_time_d30
        df["expected_outcome"] = self.expected_d30
        return df


def simulate_cohort(world: World, rng: np.random.Generator, n_users: int,
                    router: CohortRouter, *, conversations_per_day: int = 2,
                    window_days: int = 7) -> Cohort:
    """``n_users`` new users, all starting on day 0, each with ``conversations_per_day``
    conversations a day for 31 days routed by ``router`` (which learns day by day if it
    is a learner); proxies of the first ``window_days`` days are averaged per user."""
    if n_users < 1:
        raise InvalidInputError("n_users", n_users, "must be >= 1")
    if not 1 <= window_days <= 30:
        raise InvalidInputError("window_days", window_days, "must be in [1, 30]")
    prefs = world.sample_users(rng, n_users)
    base, activity = world.sample_user_traits(rng, n_users)
    rc = world.reward_config
    sums = {p: np.zeros(n_users) for p in ("retry", "rating", "length")}
    counts = {p: np.zeros(n_users) for p in ("retry", "rating", "length")}
    vsum = np.zeros(n_users)
    users = np.arange(n_users)
    for day in range(31):
        rows = np.repeat(users, conversations_per_day)
        x, topics = world.sample_conversations(rng, prefs[rows])
        arms = router.choose(world, x, topics, day, rng)
        prox = world.sample_proxies(rng, topics, arms, day)
        vsum += np.bincount(rows, world.true_values(topics, day)[np.arange(rows.size), arms],
                            minlength=n_users)
        if day < window_days:
            rated = prox.rating > 0
            vals = {"retry": (~prox.retried).astype(np.float64),
                    "rating": np.where(rated, (prox.rating - 1) / 4.0, 0.0),
                    "length": np.minimum(prox.conversation_length, rc.length_cap) / rc.length_cap}
            seen = {"retry": np.ones(rows.size), "rating": rated.astype(np.float64),
                    "length": np.ones(rows.size)}
            for p in sums:
                sums[p] += np.bincount(rows, vals[p], minlength=n_users)
                counts[p] += np.bincount(rows, seen[p], minlength=n_users)
        router.learn(world, arms, x, prox)
    q = vsum / (31 * conversations_per_day)
    expected = world.day_engagement_mean(base, activity, q, 30)
    _, screen, _ = world.sample_engagement(rng, base, activity, q, 30)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = {p: np.where(counts[p] > 0, sums[p] / np.maximum(counts[p], 1), np.nan)
                 for p in sums}
    return Cohort(means, screen, expected, q, window_days)
