"""The published reward calibration file (bandit.formats.calibration): round trip, integrity
and HMAC, field-by-field errors, concurrent appends, the follower, and the reward in force
at an event time."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from bandit.config import RewardConfig
from bandit.errors import InvalidInputError
from bandit.formats.calibration import (
    CONFIG_VERSION,
    CalibrationFile,
    CalibrationFileError,
    CalibrationHistory,
    _body,
    _canonical,
    append_version,
    decode_history,
    encode_history,
    load_history,
    version_id,
)
from bandit.formats.paths import calibration_path

KEY = b"k" * 32
NEW = RewardConfig(alpha_retry=0.7, alpha_rating=0.3, alpha_length=0.0, length_cap=20,
                   default_reward=0.0)
SOURCE = {"outcome": "day30_engagement", "n_units": 1234, "r2_oof": 0.41,
          "experiments": ["exp-a"], "as_of_ms": 5_000}


def _publish(path: Path, *, at: int, reward: RewardConfig = NEW, key: bytes | None = KEY) -> Any:
    return append_version(path, reward, effective_from_ms=at, source=SOURCE, key=key,
                          created_ms=at - 1)


def test_calibration_round_trip_and_reward_in_force_by_event_time(tmp_path: Path) -> None:
    path = calibration_path(tmp_path)
    assert len(load_history(path, KEY)) == 0  # no file: the config's α's throughout
    v1 = _publish(path, at=1_000)
    v2 = _publish(path, at=2_000, reward=RewardConfig(0.2, 0.2, 0.6))
    v3 = _publish(path, at=2_000, reward=RewardConfig(0.1, 0.1, 0.8))  # same time: supersedes
    assert [v.version for v in (v1, v2, v3)] == [1, 2, 3]
    assert v1.id.startswith("cal-1-") and len(v1.id) == len("cal-1-") + 8
    history = load_history(path, KEY)
    assert history.versions == (v1, v2, v3)
    assert dict(history.versions[0].source) == SOURCE
    default = RewardConfig()
    assert history.reward_at(999, default) == (CONFIG_VERSION, default)
    assert history.reward_at(1_000, default) == (v1.id, NEW)
    assert history.reward_at(1_999, default) == (v1.id, NEW)
    assert history.reward_at(2_000, default) == (v3.id, v3.reward)
    assert history.get(v2.id) == v2 and history.get("cal-9-00000000") is None
    # the bytes a history encodes decode to the same history; the file is 0600
    assert decode_history(encode_history(history, key=KEY), "x", key=KEY) == history
    assert os.stat(path).st_mode & 0o777 == 0o600
    # a reader without the key checks the checksum alone
    assert load_history(path) == history


def test_calibration_refuses_tampering_and_a_missing_or_wrong_hmac(tmp_path: Path) -> None:
    path = calibration_path(tmp_path)
    _publish(path, at=1_000)
    doc = json.loads(path.read_text())
    # an edited α with the checksum left alone: corrupt
    edited = json.loads(json.dumps(doc))
    edited["versions"][0]["reward"]["alpha_length"] = 0.9
    with pytest.raises(CalibrationFileError, match=r"sha256 does not match"):
        decode_history(json.dumps(edited).encode(), "f")
    # ... and with the checksum recomputed by someone without the key: the HMAC fails
    edited["sha256"] = hashlib.sha256(_canonical(_body(edited["versions"]))).hexdigest()
    with pytest.raises(CalibrationFileError, match="id does not match"):
        decode_history(json.dumps(edited).encode(), "f")
    with pytest.raises(CalibrationFileError, match="hmac_sha256 does not verify"):
        decode_history(json.dumps(edited).encode(), "f", key=KEY)
    unsigned = {k: v for k, v in doc.items() if k != "hmac_sha256"}
    with pytest.raises(CalibrationFileError, match="hmac_sha256 is missing"):
        decode_history(json.dumps(unsigned).encode(), "f", key=KEY)
    with pytest.raises(CalibrationFileError, match="does not verify"):
        load_history(path, b"another key of 32 bytes........")
    # a writer refuses to append to a file it cannot verify
    path.write_text(json.dumps(unsigned))
    with pytest.raises(CalibrationFileError, match=f"{path}: hmac_sha256 is missing"):
        _publish(path, at=2_000)


def _doc(**version: Any) -> bytes:
    """A one-version file whose version row has ``version`` merged in (checksum and id
    recomputed, so only the named field is wrong)."""
    row: dict[str, Any] = {"version": 1, "created_ms": 1, "effective_from_ms": 10,
                           "reward": {"alpha_retry": 0.5, "alpha_rating": 0.3,
                                      "alpha_length": 0.2, "length_cap": 20,
                                      "default_reward": 0.0},
                           "source": {}}
    for k, v in version.items():
        if k.startswith("reward_"):
            row["reward"][k.removeprefix("reward_")] = v
        else:
            row[k] = v
    if isinstance(row["reward"], dict):
        row["reward"] = {k: v for k, v in row["reward"].items() if v is not _DROP}
    row = {k: v for k, v in row.items() if v is not _DROP}
    content = {k: v for k, v in row.items() if k != "id"}
    row.setdefault("id", version_id(row.get("version", 1), content))
    body = _body([row])
    return json.dumps({**body, "sha256": hashlib.sha256(_canonical(body)).hexdigest()}).encode()


_DROP = object()


@pytest.mark.parametrize(
    ("data", "field", "value"),
    [
        (b"{not json", "file", None),
        (b"[]", "file", "list"),
        (json.dumps({"format": "other"}).encode(), "format", "other"),
        (json.dumps({"format": "switchboard-reward-calibration", "format_version": 2}).encode(),
         "format_version", 2),
        (_doc(reward_alpha_retry=-0.5), "versions[0].reward.alpha_retry", -0.5),
        (_doc(reward_alpha_retry="0.5"), "versions[0].reward.alpha_retry", "0.5"),
        (_doc(reward_alpha_retry=0, reward_alpha_rating=0, reward_alpha_length=0),
         "versions[0].reward.alpha_*", 0.0),
        (_doc(reward_length_cap=2.5), "versions[0].reward.length_cap", 2.5),
        (_doc(reward_length_cap=0), "versions[0].reward.length_cap", 0),
        (_doc(reward_default_reward=1.5), "versions[0].reward.default_reward", 1.5),
        (_doc(reward_default_reward=_DROP), "versions[0].reward.default_reward", None),
        (_doc(reward_gamma=1.0), "versions[0].reward.gamma", 1.0),
        (_doc(effective_from_ms=True), "versions[0].effective_from_ms", True),
        (_doc(created_ms=-1), "versions[0].created_ms", -1),
        (_doc(version=2), "versions[0].version", 2),
        (_doc(source=[1]), "versions[0].source", [1]),
        (_doc(id="cal-1-deadbeef"), "versions[0].id", "cal-1-deadbeef"),
        (_doc(note="hi"), "versions[0].note", "hi"),
        (_doc(reward=_DROP), "versions[0].reward", None),
    ],
    ids=["not-json", "not-object", "format", "format-version", "negative-alpha",
         "string-alpha", "all-zero-alphas", "fractional-cap", "zero-cap", "default-above-1",
         "missing-default", "unknown-reward-field", "bool-time", "negative-created",
         "misnumbered", "source-not-object", "wrong-id", "unknown-field", "missing-reward"],
)
def test_calibration_bad_fields_are_named_with_their_value(data: bytes, field: str,
                                                           value: Any) -> None:
    with pytest.raises(CalibrationFileError) as exc:
        decode_history(data, "/srv/model/reward-calibration.json")
    err = exc.value
    assert err.field == field and err.source == "/srv/model/reward-calibration.json"
    if value is not None:
        assert err.value == value
    assert str(err).startswith("/srv/model/reward-calibration.json: ")
    assert isinstance(err, InvalidInputError)


def test_calibration_versions_out_of_time_order_are_refused(tmp_path: Path) -> None:
    path = calibration_path(tmp_path)
    _publish(path, at=2_000)
    with pytest.raises(InvalidInputError, match="effective_from_ms must not be before") as exc:
        _publish(path, at=1_999)
    assert exc.value.field == "effective_from_ms" and exc.value.value == 1_999
    assert len(load_history(path, KEY)) == 1
    with pytest.raises(InvalidInputError, match="effective_from_ms"):
        _publish(path, at=-1)
    with pytest.raises(InvalidInputError, match="source"):
        append_version(path, NEW, effective_from_ms=3_000, source={"r2": float("nan")}, key=KEY)


def _append_many(path: str, worker: int, n: int) -> None:
    for i in range(n):
        append_version(path, RewardConfig(0.5, 0.3, 0.2), effective_from_ms=1_000,
                       source={"worker": worker, "i": i}, key=KEY)


def test_calibration_concurrent_appends_lose_no_version(tmp_path: Path) -> None:
    path = str(calibration_path(tmp_path))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, w, 6)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    history = load_history(path, KEY)
    assert [v.version for v in history.versions] == list(range(1, 13))
    assert sorted((v.source["worker"], v.source["i"]) for v in history.versions) == [
        (w, i) for w in range(2) for i in range(6)]


def test_calibration_follower_keeps_the_last_good_history_and_logs_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = calibration_path(tmp_path)
    follower = CalibrationFile(path, key=KEY, min_interval_s=3600.0)
    assert not follower.refresh() and follower.history == CalibrationHistory()
    v1 = _publish(path, at=1_000)
    assert follower.poll()  # the first poll is due at once
    assert follower.history.newest == v1
    assert not follower.poll()  # not due again for an hour (never per event)
    good = path.read_bytes()
    path.write_bytes(good.replace(b'"alpha_retry": 0.7', b'"alpha_retry": 0.9'))
    with caplog.at_level(logging.ERROR, logger="bandit.formats.calibration"):
        assert not follower.refresh()
        assert not follower.refresh()  # the same bad file: not re-read, not re-logged
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and str(path) in lines[0] and "sha256" in lines[0]
    assert v1.id in lines[0]  # says what stays in force
    assert follower.errors == 1 and follower.history.newest == v1
    assert follower.error is not None and "sha256" in follower.error
    path.write_bytes(good)
    v2 = _publish(path, at=2_000)
    assert follower.refresh() and follower.history.newest == v2 and follower.error is None


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def matured_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    """Users whose day-30 engagement is linear in their early proxies (test_calibration's
    generator), written once for the module; each test reads it read-only."""
    import numpy as np

    from bandit.store import open_store
    from tests.test_calibration import write_store

    dsn = f"chdb://{tmp_path_factory.mktemp('publish') / 'chdb'}"
    s = open_store(dsn)
    try:
        as_of = write_store(s, np.random.SeedSequence(2026_12_02), n=300)
    finally:
        s.close()
    return dsn, as_of


def test_calibrate_cli_publishes_a_signed_version_and_refuses_in_one_line(
        matured_store: tuple[str, int], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    import bandit.analysis.calibration as analysis
    from bandit.cli import main

    # the gradient-boosted comparison is advisory and costs most of a fit: left out here
    monkeypatch.setattr(analysis, "calibrate", functools.partial(analysis.calibrate,
                                                                 flexible=False))
    dsn, as_of = matured_store
    (tmp_path / "key").write_bytes(KEY)
    cfg = tmp_path / "switchboard.toml"
    cfg.write_text(f'[model]\ndir = "{tmp_path / "model"}"\n'
                   f'[learner]\nstate_hmac_key_file = "{tmp_path / "key"}"\n')
    path = calibration_path(tmp_path / "model")
    common = ["--config", str(cfg), "calibrate", "--dsn", dsn, "--as-of-ms", str(as_of),
              "--bootstrap", "20", "--folds", "2"]
    # too few matured users: refused in one line before anything is published
    assert main([*common, "--min-units", "100000", "--publish"]) == 2
    err = capsys.readouterr().err
    assert "too few matured users" in err and err.count("\n") == 1 and not path.exists()
    assert main([*common, "--min-units", "100", "--publish", "--effective-from-ms", "5000"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    v = load_history(path, KEY).newest  # signed with the learner's key: it verifies
    assert v is not None and out[-1] == f"published {v.id} to {path} (decisions from 5000 ms on)"
    assert v.effective_from_ms == 5000 and v.reward.alpha_retry > v.reward.alpha_length
    assert v.reward.alpha_retry + v.reward.alpha_rating + v.reward.alpha_length == \
        pytest.approx(1.0, abs=1e-3)
    assert v.source["outcome"] == "day30_engagement" and v.source["n_units"] >= 100
    assert v.source["experiments"] == ["exp-cal"] and v.source["as_of_ms"] == as_of
    assert 0 < v.source["r2_oof"] < 1


def test_publish_refuses_untrustworthy_or_out_of_order_versions(tmp_path: Path) -> None:
    import dataclasses

    import numpy as np

    from bandit.analysis.calibration import calibrate
    from bandit.cli.calibrate import publish
    from bandit.config import Config, ModelConfig
    from tests.test_calibration import linear_users

    cal = calibrate(linear_users(np.random.SeedSequence(7), n=300), flexible=False,
                    n_bootstrap=20, folds=2)
    cfg = Config(model=ModelConfig(dir=str(tmp_path)))
    first = publish(cal, cfg, effective_from_ms=2_000)
    assert first["id"].startswith("cal-1-") and not first["signed"]
    with pytest.raises(InvalidInputError, match="effective_from_ms must not be before"):
        publish(cal, cfg, effective_from_ms=1_999)
    with pytest.raises(InvalidInputError, match="r2_oof must be > 0 to publish"):
        publish(dataclasses.replace(cal, r2_oof=-0.01), cfg)
    clipped = dataclasses.replace(cal, alpha={p: 0.0 for p in cal.alpha})
    with pytest.raises(InvalidInputError, match=r"alpha_\*.* must not all be zero"):
        publish(clipped, cfg)
    assert len(load_history(calibration_path(tmp_path))) == 1


def test_served_policy_version_names_the_calibration_applied() -> None:
    from bandit.serving.reloader import served_version

    stamped = {"extra": {"role": "learner-merged", "reward_version": "cal-2-ab12cd34"}}
    assert served_version("linucb:7", stamped) == "linucb:7+cal-2-ab12cd34"
    # the config's α's, a snapshot from before calibrations, a prior: today's string
    for meta in ({"extra": {"role": "learner-merged"}}, {"extra": None}, {},
                 {"extra": {"reward_version": "config"}}):
        assert served_version("linucb:7", meta) == "linucb:7"
