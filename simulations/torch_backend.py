"""Many seeds (or a hyper-parameter grid) of disjoint LinUCB as one batched tensor program.

The batched-tensor twin of the core's LinUCB, kept for many runs at once on a GPU or
CPU; tests/test_sim_torch_core.py checks its scores and updates against the core's
``score_batch`` on the same events. State per (run s, arm k): ``A⁻¹`` (S, K, d, d) kept
by Sherman–Morrison rank-one updates (A⁻¹ ← A⁻¹ − (A⁻¹x)(A⁻¹x)ᵀ / (1 + xᵀA⁻¹x),
:func:`linucb_update`) and ``b`` (S, K, d). Score (:func:`linucb_scores`), as
:class:`bandit.policies.linucb.LinUCB`: θ_kᵀx + α_s·sqrt(xᵀA_k⁻¹x) with the probability
floor of :func:`bandit.policies.common.floored_argmax` (non-maximal arms get ``floor``).
Feedback is delayed and batched: updates are applied every ``update_every`` steps.

The world's contexts, true expected rewards and the uniforms behind the proxies are
drawn with numpy per run (from ``SeedSequence.spawn``), so runs are reproducible and
statistically the same as the numpy path; only the policy arithmetic is batched. This
is the only module that imports torch. ``device`` is ``"cpu"``, ``"cuda"`` or
``"auto"`` (CUDA when available).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from bandit.errors import InvalidInputError
from simulations.world import World

__all__ = [
    "BatchedLinUCBResult",
    "linucb_scores",
    "linucb_update",
    "resolve_device",
    "simulate_linucb_batched",
]

FloatArray = npt.NDArray[np.float64]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → CUDA if available, else CPU; an unavailable CUDA is refused."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError("device", device, "is not available on this machine")
    if not (device == "cpu" or device.startswith("cuda")):
        raise InvalidInputError("device", device, "must be 'auto', 'cpu' or 'cuda[:n]'")
    return torch.device(device)


@dataclass(frozen=True)
class BatchedLinUCBResult:
    """Per-run cumulative regret / reward curves (S, T) and throughput."""

    cumulative_regret: FloatArray
    cumulative_reward: FloatArray
    alphas: FloatArray
    seconds: float
    device: str

    @property
    def seed_steps_per_s(self) -> float:
        s, t = self.cumulative_regret.shape
        return s * t / max(self.seconds, 1e-12)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": int(self.cumulative_regret.shape[0]),
            "steps": int(self.cumulative_regret.shape[1]),
            "device": self.device,
            "seconds": self.seconds,
            "seed_steps_per_s": self.seed_steps_per_s,
            "mean_final_regret": float(self.cumulative_regret[:, -1].mean()),
        }


def linucb_scores(theta: torch.Tensor, a_inv: torch.Tensor, x: torch.Tensor,
                  alpha: torch.Tensor) -> torch.Tensor:
    """θ_kᵀx + α_s·sqrt(xᵀA_k⁻¹x) for every run s and arm k: (S, K).

    ``theta`` (S, K, d), ``a_inv`` (S, K, d, d), ``x`` (S, d), ``alpha`` (S,): the batched
    form of the core LinUCB's ``score_batch`` scores (tests/test_sim_torch_core.py).
    """
    S, K, d = theta.shape
    mean = torch.einsum("skd,sd->sk", theta, x)
    # xᵀA⁻¹x for every arm: one batched matrix–vector product over (K·d, d) per run.
    ax = torch.matmul(a_inv.view(S, K * d, d), x.unsqueeze(2)).view(S, K, d)
    var = torch.einsum("ski,si->sk", ax, x).clamp_min_(0)
    return torch.addcmul(mean, alpha[:, None], var.sqrt_())


def linucb_update(a_inv: torch.Tensor, b: torch.Tensor, theta: torch.Tensor, arm: torch.Tensor,
                  x: torch.Tensor, r: torch.Tensor, runs: torch.Tensor | None = None) -> None:
    """In place: run s learns (arm[s], x[s], r[s]) — Sherman–Morrison on that arm's A⁻¹,
    b += r·x and θ = A⁻¹b of that arm only (the core's rank-one update). ``runs`` is
    ``arange(S)`` (pass it to avoid one allocation per call)."""
    if runs is None:
        runs = torch.arange(a_inv.shape[0], device=a_inv.device)
    m = a_inv[runs, arm]
    mx = torch.matmul(m, x.unsqueeze(2)).squeeze(2)
    denom = 1.0 + torch.einsum("si,si->s", mx, x)
    m_new = m - torch.einsum("si,sj->sij", mx, mx) / denom[:, None, None]
    a_inv[runs, arm] = m_new
    b_new = b[runs, arm] + r[:, None] * x
    b[runs, arm] = b_new
    theta[runs, arm] = torch.matmul(m_new, b_new.unsqueeze(2)).squeeze(2)


def _draw_run(world: World, seq: np.random.SeedSequence, steps: int, steps_per_day: int
              ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    rng = np.random.default_rng(seq)
    _, x, topics = world.sample_contexts(rng, steps)
    days = np.arange(steps) // steps_per_day
    z = np.empty((steps, world.n_arms))
    for day in np.unique(days):
        m = days == day
        z[m] = world.fit(topics[m], int(day))
    u = rng.random((steps, 8))
    return x, z, u, days


def simulate_linucb_batched(
    world: World,
    seeds: list[np.random.SeedSequence],
    *,
    steps: int,
    alphas: npt.ArrayLike | float = 1.0,
    ridge_lambda: float = 1.0,
    probability_floor: float = 0.01,
    update_every: int = 1,
    steps_per_day: int = 10_000_000,
    device: str = "auto",
    dtype: torch.dtype = torch.float64,
    threads: int | None = None,
) -> BatchedLinUCBResult:
    """Simulate ``len(seeds)`` LinUCB runs (one α each, broadcast) for ``steps`` steps.

    Regret is against the best *active* arm's true expected reward at each step. Rewards
    follow :meth:`World.sample_proxies` exactly (retry, rating observed with
    ``rating_rate``, length as Binomial(cap, ·) drawn by inverse CDF from one uniform).
    """
    if steps < 1:
        raise InvalidInputError("steps", steps, "must be >= 1")
    if update_every < 1:
        raise InvalidInputError("update_every", update_every, "must be >= 1")
    if not seeds:
        raise InvalidInputError("seeds", 0, "must hold at least one SeedSequence")
    dev = resolve_device(device)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        # Intra-op threads: 1 is fastest for these small per-step kernels on a busy CPU;
        # the caller's setting is restored on return.
        torch.set_num_threads(threads)
    try:
        return _run(world, seeds, steps, alphas, ridge_lambda, probability_floor,
                    update_every, steps_per_day, dev, dtype)
    finally:
        torch.set_num_threads(previous_threads)


def _run(world: World, seeds: list[np.random.SeedSequence], steps: int,
         alphas: npt.ArrayLike | float, ridge_lambda: float, probability_floor: float,
         update_every: int, steps_per_day: int, dev: torch.device,
         dtype: torch.dtype) -> BatchedLinUCBResult:
    S, K, d = len(seeds), world.n_arms, world.dim
    alpha_np = np.broadcast_to(np.asarray(alphas, dtype=np.float64), (S,)).copy()
    draws = [_draw_run(world, s, steps, steps_per_day) for s in seeds]
    X = torch.tensor(np.stack([r[0] for r in draws]), dtype=dtype, device=dev)  # (S,T,d)
    Z = torch.tensor(np.stack([r[1] for r in draws]), dtype=dtype, device=dev)  # (S,T,K)
    U = torch.tensor(np.stack([r[2] for r in draws]), dtype=dtype, device=dev)  # (S,T,8)
    days = draws[0][3]
    active_np = np.stack([world.active_mask(int(dd)) for dd in range(int(days.max()) + 1)])
    active = torch.tensor(active_np, device=dev)
    rc, rho = world.reward_config, world.scenario.rating_rate
    cap = rc.length_cap
    # Expected rewards of every arm (same formula as World._expected_from_fit).
    mu = torch.tensor(np.stack([world._expected_from_fit(r[1]) for r in draws]),
                      dtype=dtype, device=dev)
    alpha = torch.tensor(alpha_np, dtype=dtype, device=dev)
    a_inv = torch.eye(d, dtype=dtype, device=dev).repeat(S, K, 1, 1) / ridge_lambda
    b = torch.zeros((S, K, d), dtype=dtype, device=dev)
    theta = torch.zeros((S, K, d), dtype=dtype, device=dev)
    regret = torch.zeros((S, steps), dtype=dtype, device=dev)
    reward = torch.zeros((S, steps), dtype=dtype, device=dev)
    runs = torch.arange(S, device=dev)
    pend_a: list[torch.Tensor] = []
    pend_x: list[torch.Tensor] = []
    pend_r: list[torch.Tensor] = []
    log_comb = _log_comb(cap, dtype, dev)
    # Everything that depends only on the day is prepared on the host before the clock
    # starts, so the step loop issues kernels and never waits for the device (no .item(),
    # no boolean indexing, no host→device copies inside the loop).
    n_days = active_np.shape[0]
    n_act_day = [int(active_np[dd].sum()) for dd in range(n_days)]
    act_idx_day = [torch.tensor(np.flatnonzero(active_np[dd]), device=dev) for dd in range(n_days)]
    neg_inf = torch.tensor(-torch.inf, dtype=dtype, device=dev)
    # Regret baseline: the best active arm's true expected reward at every step (S, T).
    act_t = active[torch.as_tensor(days, device=dev)]  # (T, K)
    best_mu = torch.where(act_t[None], mu, neg_inf).amax(dim=2)
    log_comb4 = _log_comb(4, dtype, dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for t in range(steps):
        x = X[:, t]
        day = int(days[t])
        act = active[day]
        n_act = n_act_day[day]
        act_idx = act_idx_day[day]
        scores = torch.where(act, linucb_scores(theta, a_inv, x, alpha), neg_inf)
        f = min(probability_floor, 1.0 / n_act)
        best = scores.argmax(dim=1)
        u = U[:, t, 0]
        explore = u >= 1.0 - (n_act - 1) * f
        # Uniform among the other active arms when exploring.
        other_rank = ((u - (1.0 - (n_act - 1) * f)) / max(f, 1e-300)).floor().long()
        other_rank = other_rank.clamp(0, max(n_act - 2, 0))
        pos_best = (act_idx[None, :] < best[:, None]).sum(dim=1)
        pick = other_rank + (other_rank >= pos_best).long()
        if n_act > 1:
            chosen = torch.where(explore, act_idx[pick.clamp(max=n_act - 1)], best)
        else:
            chosen = best
        z = Z[runs, t, chosen]
        regret[:, t] = best_mu[:, t] - mu[runs, t, chosen]
        # Proxies from uniforms: retry, rating (Binomial(4) via CDF), observed, length.
        p_ok, p_rate, p_len = torch.sigmoid(z), torch.sigmoid(z - 0.3), torch.sigmoid(z - 0.5)
        ok = (U[:, t, 1] < p_ok).to(dtype)
        stars = _binom_inv(U[:, t, 2], p_rate, 4, log_comb4)
        obs = (U[:, t, 3] < rho).to(dtype)
        length = _binom_inv(U[:, t, 4], p_len, cap, log_comb)
        num = (rc.alpha_retry * ok + rc.alpha_length * length / cap
               + obs * rc.alpha_rating * stars / 4)
        den = rc.alpha_retry + rc.alpha_length + obs * rc.alpha_rating
        r = num / den
        reward[:, t] = r
        pend_a.append(chosen)
        pend_x.append(x)
        pend_r.append(r)
        if len(pend_a) >= update_every or t == steps - 1:
            for ca, cx, cr in zip(pend_a, pend_x, pend_r, strict=True):
                linucb_update(a_inv, b, theta, ca, cx, cr, runs)
            pend_a, pend_x, pend_r = [], [], []
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return BatchedLinUCBResult(
        cumulative_regret=regret.cumsum(dim=1).cpu().numpy(),
        cumulative_reward=reward.cumsum(dim=1).cpu().numpy(),
        alphas=alpha_np,
        seconds=seconds,
        device=str(dev),
    )


def _log_comb(n: int, dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
    """log C(n, k) for k = 0..n."""
    k = torch.arange(n + 1, dtype=dtype)
    out = torch.lgamma(torch.tensor(n + 1.0, dtype=dtype)) - torch.lgamma(k + 1) \
        - torch.lgamma(n - k + 1)
    return out.to(dev)


def _binom_inv(u: torch.Tensor, p: torch.Tensor, n: int, log_comb: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw of Binomial(n, p) from uniforms ``u`` (small n; ``log_comb`` from
    :func:`_log_comb`)."""
    k = torch.arange(n + 1, device=u.device, dtype=u.dtype)
    pmf = torch.exp(log_comb[None, :] + k[None, :] * torch.log(p)[:, None]
                    + (n - k[None, :]) * torch.log1p(-p)[:, None])
    return (u[:, None] > pmf.cumsum(dim=1)).sum(dim=1).clamp(max=n).to(u.dtype)
