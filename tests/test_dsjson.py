"""DSJSON per the format's definition, checked line by line against Vowpal Wabbit's parser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bandit.errors import InvalidInputError
from simulations.logs import LogSpec, read_dsjson, read_log, write_dsjson

# Spec-conforming lines: ranked `a` (chosen first), several namespaces, shared-only and
# action-only features, string/numeric/bool features, nested namespaces, missing optional
# fields (_label_Action, EventId, Timestamp), pdrop.
CORPUS = [
    {"_label_cost": -1.0, "_label_probability": 0.6, "_label_Action": 3, "_labelIndex": 2,
     "a": [3, 1, 2], "p": [0.6, 0.2, 0.2],
     "c": {"User": {"age": 31, "country": "fr"}, "Device": {"os": "ios", "mobile": True},
           "_multi": [{"i": {"id": "cats"}}, {"i": {"id": "dogs"}}, {"i": {"id": "birds"}}]},
     "EventId": "e1", "Timestamp": "2026-11-30T10:00:00.0000000Z"},
    {"_label_cost": 0.0, "_label_probability": 0.25, "_label_Action": 1, "_labelIndex": 0,
     "a": [1, 2, 3, 4], "p": [0.25, 0.25, 0.25, 0.25],
     "c": {"hour": 7, "weekday": "mon",
           "_multi": [{"i": {"id": "cats"}}, {"i": {"id": "dogs"}}, {"i": {"id": "birds"}},
                      {"i": {"id": "fish"}}]},
     "EventId": "e2", "Timestamp": "2026-11-30T10:00:02Z"},
    {"_label_cost": -0.5, "_label_probability": 0.7, "_labelIndex": 1, "a": [2, 1],
     "p": [0.7, 0.3],
     "c": {"_multi": [{"i": {"id": "dogs"}, "A": {"f": 1.5}},
                      {"i": {"id": "cats"}, "A": {"f": 2.5, "g": "red"}}]},
     "EventId": "e3", "Timestamp": "2026-11-30T10:00:03Z"},
    {"_label_cost": -1, "_label_probability": 0.1, "_label_Action": 2, "_labelIndex": 1,
     "a": [2, 1, 3], "p": [0.1, 0.8, 0.1],
     "c": {"Ctx": {"Inner": {"v": 0.3}, "emb": [0.1, 0.2, 0.3]},
           "_multi": [{"i": {"id": "cats"}}, {"i": {"id": "dogs"}}, {"i": {"id": "birds"}}]},
     "Timestamp": "2026-11-30T10:00:04Z"},
    {"_label_cost": -0.2, "_label_probability": 0.5, "_label_Action": 2, "_labelIndex": 1,
     "a": [2, 1], "p": [0.5, 0.5], "pdrop": 0.2, "_skipLearn": False,
     "c": {"U": {"k": "v"}, "_multi": [{"i": {"id": "cats"}}, {"i": {"id": "dogs"}}]},
     "EventId": "e5", "Timestamp": "2026-11-30T10:00:05Z"},
]


def _generated(seed: int, n: int) -> list[dict]:  # type: ignore[type-arg]
    """Random spec-conforming events: ranked a, random namespaces, optional fields."""
    rng = np.random.default_rng(seed)
    names = ["cats", "dogs", "birds", "fish", "frogs", "ants"]
    out = []
    for i in range(n):
        k = int(rng.integers(2, 7))
        acts = list(rng.permutation(names)[:k])
        probs = rng.dirichlet(np.ones(k))
        ranking = [int(j) + 1 for j in np.argsort(-probs)]
        chosen = ranking[0]
        shared: dict = {}  # type: ignore[type-arg]
        if rng.random() < 0.7:
            shared["User"] = {"age": int(rng.integers(18, 80)), "tier": str(rng.choice(["a", "b"]))}
        if rng.random() < 0.5:
            shared["hour"] = float(rng.integers(0, 24))
        multi = [{"i": {"id": a}} if rng.random() < 0.8 else {"i": {"id": a}, "F": {"q": 0.5}}
                 for a in acts]
        ev: dict = {"_label_cost": -float(rng.integers(0, 2)),  # type: ignore[type-arg]
                    "_label_probability": float(probs[chosen - 1]), "_labelIndex": chosen - 1,
                    "a": ranking, "p": [float(probs[j - 1]) for j in ranking],
                    "c": {**shared, "_multi": multi}}
        if rng.random() < 0.6:
            ev["_label_Action"] = chosen
        if rng.random() < 0.6:
            ev["EventId"] = f"g{i}"
        if rng.random() < 0.2:
            ev["pdrop"] = 0.1
        out.append(ev)
    return out


def _vw_labels(lines: list[str]) -> list[tuple[int, float, float, float]]:
    """(chosen position in _multi, cost, probability, weight) as VW's own parser reads them."""
    from vowpal_wabbit_next import DSJsonFormatParser, Workspace

    parser = DSJsonFormatParser(Workspace(["--cb_explore_adf", "--quiet"]))
    out = []
    for line in lines:
        actions = [e for e in parser.parse_json(line) if not e.get_label().shared]
        hits = [(j, e.get_label()) for j, e in enumerate(actions) if e.get_label().label]
        assert len(hits) == 1, line
        j, lab = hits[0]
        _action, cost, prob = lab.label
        out.append((j, float(cost), float(prob), float(lab.weight)))
    return out


@pytest.mark.parametrize("events", [CORPUS, _generated(20261201, 300)], ids=["corpus", "generated"])
def test_dsjson_chosen_action_cost_probability_match_vw_parser(tmp_path: Path, events) -> None:  # type: ignore[no-untyped-def]
    lines = [json.dumps(e) for e in events]
    path = tmp_path / "log.dsjson"
    path.write_text("\n".join(lines) + "\n")
    spec = LogSpec(action_id="i.id", reward_range=(0.0, 1.0))
    data, report = read_dsjson(path, spec=spec)
    assert report.malformed == 0 and data.n == len(events)
    # Timestamps order the events: this corpus is already in time order.
    for i, (ev, (j, cost, prob, weight)) in enumerate(zip(events, _vw_labels(lines), strict=True)):
        assert data.arm_ids[data.arm_index[i]] == ev["c"]["_multi"][j]["i"]["id"], i
        assert data.reward[i] == pytest.approx(-cost, abs=1e-6)
        assert data.propensity[i] == pytest.approx(prob, abs=1e-6)
        w = 1.0 if data.weights is None else data.weights[i]
        assert w == pytest.approx(weight, abs=1e-6)
    # the full distribution from the ranking `a` and `p`, aligned
    assert data.probabilities is not None
    np.testing.assert_allclose(data.probabilities.sum(axis=1), 1.0)
    assert data.eligible is not None and data.eligible.sum(axis=1).tolist() == [
        len(e["c"]["_multi"]) for e in events]


def test_dsjson_ranked_a_credits_the_multi_index_not_the_ranking(tmp_path: Path) -> None:
    # _labelIndex 0 with a = [1, 3, 2]: chosen is _multi[0] with p[0]; reading _labelIndex
    # as an index into a would credit the same action, so use rankings where they differ.
    evs = [{"_label_cost": -1.0, "_label_probability": 0.5, "_labelIndex": 2, "a": [3, 1, 2],
            "p": [0.5, 0.3, 0.2],
            "c": {"_multi": [{"arm_id": "x"}, {"arm_id": "y"}, {"arm_id": "z"}]}}]
    path = tmp_path / "a.dsjson"
    path.write_text(json.dumps(evs[0]) + "\n")
    data, _ = read_dsjson(path)
    assert data.arm_ids[data.arm_index[0]] == "z" and data.propensity[0] == 0.5
    assert data.probabilities is not None
    got = dict(zip(data.arm_ids, data.probabilities[0], strict=True))
    assert got == {"x": 0.3, "y": 0.2, "z": 0.5}


def test_dsjson_contexts_are_deterministic_and_fixed_length(tmp_path: Path) -> None:
    path = tmp_path / "c.dsjson"
    path.write_text("\n".join(json.dumps(e) for e in CORPUS) + "\n")
    a, rep = read_dsjson(path, spec=LogSpec(action_id="i.id", features="hash", dim=16))
    b, _ = read_dsjson(path, spec=LogSpec(action_id="i.id", features="hash", dim=16))
    assert a.contexts.shape == (5, 16) and rep.dim_source == "hash"
    np.testing.assert_array_equal(a.contexts, b.contexts)
    assert (a.contexts[:, 0] == 1).all()  # the constant feature
    assert (a.contexts[2, 1:] == 0).all()  # action-only features: context is the constant
    named, rep = read_dsjson(path, spec=LogSpec(action_id="i.id", features="named"))
    cols = rep.dim
    assert named.contexts.shape == (5, cols) and rep.dim_source == "named"
    # User/age=31 on line 1, string features one-hot
    assert 31.0 in named.contexts[0] and named.contexts[0].sum() == 1 + 31 + 1 + 1 + 1


def test_dsjson_skiplearn_cost_mapping_and_bad_lines(tmp_path: Path) -> None:
    good = CORPUS[1]
    lines = [
        json.dumps({**good, "_skipLearn": True}),
        json.dumps({**good, "_labelIndex": 9}),  # outside _multi
        json.dumps({**good, "_label_Action": 3}),  # disagrees with _labelIndex 0
        json.dumps({k: v for k, v in good.items() if k != "_label_cost"}),
        json.dumps({**good, "c": {"_multi": []}}),
        json.dumps({**good, "a": [1, 2], "p": [0.5]}),
        "[1, 2]",
        json.dumps(good),
        json.dumps({**good, "_label_cost": -3.0}),  # reward 3 outside [0, 1]
    ]
    path = tmp_path / "bad.dsjson"
    path.write_text("\n".join(lines) + "\n")
    data, rep = read_dsjson(path, spec=LogSpec(action_id="i.id"))
    assert rep.skipped == 1 and data.n == 1 and rep.malformed == 7
    assert [n for n, _ in rep.errors] == [2, 3, 4, 5, 6, 7, 9]
    assert "outside the declared range" in rep.errors[-1][1]
    clipped, rep = read_dsjson(path, spec=LogSpec(action_id="i.id", out_of_range="clip"))
    assert clipped.n == 2 and rep.clipped == 1 and clipped.reward.max() == 1.0
    one_minus, _ = read_dsjson(path, spec=LogSpec(action_id="i.id", cost_scale=-1.0,
                                                  cost_offset=1.0, out_of_range="clip"))
    assert one_minus.reward.tolist() == [1.0, 1.0]
    with pytest.raises(InvalidInputError):
        read_dsjson(path, spec=LogSpec(action_id="i.id", reward_range=(1.0, 0.0)))


def test_dsjson_writer_is_readable_by_vw_and_never_invents_probabilities(tmp_path: Path) -> None:
    from simulations.world import make_world, simulate_log

    world = make_world("small", 0)
    data, _ = simulate_log(world, np.random.default_rng(3), 40)  # uniform logger: no pi_b
    path = tmp_path / "w.dsjson"
    write_dsjson(path, data)
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    assert first["a"][0] == first["_labelIndex"] + 1 and len(first["p"]) == 1
    for i, (j, cost, prob, _w) in enumerate(_vw_labels(lines)):
        assert j == data.arm_index[i] and cost == pytest.approx(-data.reward[i], abs=1e-6)
        assert prob == pytest.approx(data.propensity[i], abs=1e-6)
    back, rep = read_log(path)
    assert rep.malformed == 0 and back.probabilities is None
    np.testing.assert_allclose(back.contexts, data.contexts)


_ODD = [None, True, False, 0, -1, 1.5, 1e308, "x", "", [], [1], [None], {}, {"a": 1}, [[1]],
        [{"b": "c"}], 10**30]


def _mutate(obj, rng):  # type: ignore[no-untyped-def]
    if isinstance(obj, dict) and obj:
        out = dict(obj)
        key = list(out)[int(rng.integers(len(out)))]
        r = rng.random()
        if r < 0.3:
            del out[key]
        else:
            out[key] = _ODD[int(rng.integers(len(_ODD)))] if r < 0.7 else _mutate(out[key], rng)
        return out
    if isinstance(obj, list) and obj:
        out = list(obj)
        i = int(rng.integers(len(out)))
        out[i] = _ODD[int(rng.integers(len(_ODD)))] if rng.random() < 0.5 else _mutate(out[i], rng)
        return out
    return _ODD[int(rng.integers(len(_ODD)))]


def test_dsjson_odd_values_anywhere_are_malformed_lines_never_a_traceback(tmp_path: Path) -> None:
    rng = np.random.default_rng(20261201)
    good = json.dumps(CORPUS[1])
    path = tmp_path / "odd.dsjson"
    for _ in range(300):
        event = CORPUS[int(rng.integers(len(CORPUS)))]
        for _ in range(int(rng.integers(1, 4))):
            event = _mutate(event, rng)
        path.write_text(json.dumps(event) + "\n" + good + "\n")
        for spec in (LogSpec(action_id="i.id"), LogSpec(features="named")):
            try:
                data, rep = read_dsjson(path, spec=spec)
            except InvalidInputError as exc:  # only a bad propensity refuses the log
                assert "propensity" in exc.field
                continue
            assert rep.lines == 2 and data.n + rep.malformed + rep.skipped == 2


def _hashed(names_values: list[tuple[str, float]], m: int) -> np.ndarray:
    """The documented action-feature mapping: column crc32(name) mod m, sign from bit 31."""
    import zlib

    out = np.zeros(m)
    for name, v in names_values:
        h = zlib.crc32(name.encode())
        out[h % m] += (-1.0 if h & 0x80000000 else 1.0) * v
    return out


def test_dsjson_action_features_become_hybrid_arm_features(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    judge = {"cats": 0.9, "dogs": 0.1, "birds": 0.5}
    lines = []
    for i in range(400):
        order = [str(a) for a in rng.permutation(list(judge))]
        chosen = int(rng.integers(3))
        multi = [{"i": {"id": a}, "J": {"judge": judge[a], "style": "rp" if a == "cats" else "qa"}}
                 for a in order]
        if i == 7:  # the same arm listed with other features later: counted, first kept
            multi[0]["J"]["judge"] = 0.0
        lines.append(json.dumps({
            "_label_cost": -float(rng.random() < judge[order[chosen]]),
            "_label_probability": 1 / 3, "_labelIndex": chosen, "a": [chosen + 1], "p": [1 / 3],
            "c": {"U": {"h": float(rng.integers(24))}, "_multi": multi}}))
    path = tmp_path / "af.dsjson"
    path.write_text("\n".join(lines) + "\n")
    spec = LogSpec(action_id="i.id", action_features="hash", action_feature_dim=8)
    data, rep = read_dsjson(path, spec=spec)
    assert rep.malformed == 0 and rep.action_feature_conflicts == 1
    assert data.arm_features is not None and data.arm_features.shape == (3, 8)
    for a, j in judge.items():  # the id feature i/id=... is not a content feature
        style = "rp" if a == "cats" else "qa"
        want = _hashed([("J/judge", j), (f"J/style={style}", 1.0)], 8)
        np.testing.assert_array_equal(data.arm_features[data.arm_ids.index(a)], want)
    reg = data.arm_registry()
    assert reg.feature_dim == 8 and reg.get("dogs").features == tuple(
        data.arm_features[data.arm_ids.index("dogs")])
    plain, _ = read_dsjson(path, spec=LogSpec(action_id="i.id"))
    assert plain.arm_features is None and plain.arm_registry().feature_dim is None
    from bandit.cli import main

    argv = ["replay", "--log", str(path), "--action-id", "i.id", "--policies", "hybrid_linucb",
            "--batch-size", "1", "--min-events", "1", "--json"]
    assert main(argv) == 2  # hybrid LinUCB without arm features: one clear error line
    assert "--action-features hash" in capsys.readouterr().err
    assert main([*argv, "--action-features", "hash", "--action-feature-dim", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["policy"] == "hybrid_linucb" and out["results"][0]["events_used"] > 50
    assert out["log"]["action_feature_conflicts"] == 1
    with pytest.raises(InvalidInputError, match="action_features"):
        LogSpec(action_features="magic")


def test_dsjson_fast_paths_read_what_the_line_by_line_reader_reads(tmp_path: Path,
                                                                  monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Repeated action lists parsed once and runs accepted column-wise change nothing."""
    import orjson

    import simulations.logs as logs

    rng = np.random.default_rng(11)
    good = CORPUS[1]
    multi = orjson.dumps(good["c"]["_multi"]).decode()
    base = orjson.dumps(good).decode()
    lines: list[str] = []
    for i in range(1300):  # runs of 512 all well-formed and runs with odd lines; two spellings
        ev = {**good, "EventId": f"r{i}", "_label_cost": -float(rng.integers(0, 2)),
              "c": {"x": [float(v) for v in rng.standard_normal(3)], "_multi": good["c"]["_multi"]}}
        lines.append(orjson.dumps(ev).decode() if i % 400 < 200 else json.dumps(ev))
    lines[700] = json.dumps({**good, "a": [True, 2, 3, 4]})  # a bool is not an action id
    lines[900] = json.dumps({**good, "_skipLearn": True})
    lines[1000] = lines[1001][:-5]  # not JSON
    lines += [
        base.replace('"c":{', '"c":{"N":{"_multi":' + multi + '},', 1),  # nested key first
        base.replace('"_multi":', '"_multi":' + multi + ',"_multi":', 1),  # duplicate key
        base.replace('"c":', '"c":{"_multi":' + multi + '},"c":', 1),  # duplicate "c"
        base.replace(multi, multi[:-1] + ',{"i":{"id":"new"}}]'),  # a longer list, same start
        base, base,
    ]
    path = tmp_path / "runs.dsjson"
    path.write_text("\n".join(lines) + "\n")
    specs = [LogSpec(action_id="i.id"), LogSpec(action_id="i.id", features="hash", dim=8),
             LogSpec(action_id="i.id", features="named"),
             LogSpec(action_id="i.id", out_of_range="clip", cost_scale=-2.0)]
    fast = [read_dsjson(path, spec=s) for s in specs]
    monkeypatch.setattr(logs, "_dsjson_chunk", lambda b, run: False)
    monkeypatch.setattr(logs, "_dsjson_objects", logs._json_objects)
    for (got, rep), spec in zip(fast, specs, strict=True):
        want, want_rep = read_dsjson(path, spec=spec)
        assert rep.to_dict() == want_rep.to_dict() and rep.malformed >= 2
        assert got.arm_ids == want.arm_ids and got.decision_ids == want.decision_ids
        for name in ("contexts", "arm_index", "propensity", "reward", "probabilities",
                     "eligible", "weights"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_dsjson_namespace_runs_read_what_the_line_by_line_reader_reads(tmp_path: Path,
                                                                      monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Namespaces hashed column by column give the features, floats and reports per line."""
    import orjson

    import simulations.logs as logs

    rng = np.random.default_rng(12)
    multi = [{"i": {"id": f"item{j}"}} for j in range(4)]

    def shared(i: int, odd: bool) -> dict:  # type: ignore[type-arg]
        c: dict = {"User": {"age": int(rng.integers(18, 80)),  # type: ignore[type-arg]
                            "tier": str(rng.choice(["gold", "silver"]))},
                   "Ctx": {"hour": float(rng.integers(0, 24)) / 3, "device": "ios"}}
        if odd:  # layouts that change from line to line, and every JSON type
            v = int(rng.integers(0, 9))
            if v == 0:
                c["Ctx"] = {"device": "web", "hour": 3}  # other key order, int beside floats
            elif v == 1:
                c["User"]["vip"] = bool(rng.integers(0, 2))
            elif v == 2:
                c["User"]["tier"] = None
            elif v == 3:
                c["emb"] = [0.5, "tag", -1.25, None, False, {"deep": 2}]
            elif v == 4:
                c["Ctx"]["Inner"] = {"v": 0.1 * i, "w": "x"}
            elif v == 5:
                c["flag"], c["n"] = True, 7
            elif v == 6:
                c["User"]["age"] = str(c["User"]["age"])  # a string where numbers were
            elif v == 7:
                del c["User"]
            c = dict(sorted(c.items(), reverse=bool(rng.integers(0, 2))))
        return c

    lines = []
    for i in range(1200):  # a uniform run, runs of odd layouts, a uniform run with a bad line
        ev = {"_label_cost": -float(rng.integers(0, 2)), "_label_probability": 0.25,
              "_labelIndex": int(rng.integers(0, 4)), "a": [1, 2, 3, 4],
              "p": [0.25] * 4, "EventId": f"n{i}",
              "c": {**shared(i, 512 <= i < 1024), "_multi": multi}}
        lines.append(orjson.dumps(ev).decode())
    lines[1100] = lines[1100].replace('"ios"', '1e999')  # not finite: a malformed line
    path = tmp_path / "ns.dsjson"
    path.write_text("\n".join(lines) + "\n")
    specs = [LogSpec(action_id="i.id"), LogSpec(action_id="i.id", features="hash", dim=8),
             LogSpec(action_id="i.id", features="named"),
             LogSpec(action_id="i.id", features="dense")]
    fast = [read_dsjson(path, spec=s) for s in specs]
    monkeypatch.setattr(logs, "_dsjson_chunk", lambda b, run: False)
    monkeypatch.setattr(logs, "_dsjson_objects", logs._json_objects)
    for (got, rep), spec in zip(fast, specs, strict=True):
        want, want_rep = read_dsjson(path, spec=spec)
        assert rep.to_dict() == want_rep.to_dict()
        assert got.arm_ids == want.arm_ids and got.decision_ids == want.decision_ids
        for name in ("contexts", "arm_index", "propensity", "reward", "probabilities"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert fast[0][1].malformed == 1 and fast[0][0].dim == 64 and fast[1][0].dim == 8
