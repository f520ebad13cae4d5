"""Arms registered on one allocation server reach the others through the shared registry."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bandit.config import ModelConfig
from bandit.formats.paths import REGISTRY_NAME
from bandit.formats.registry import RegistryFile
from bandit.serving.app import create_app
from bandit.serving.live import LiveServer
from tests.test_serve import ADMIN, BANDIT_UNIT, TOKEN, ListSink, alloc, base_arms, make_config

_CLIENT = httpx.Client(timeout=10)


def _eventually(check: Callable[[], bool], what: str, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_s} s: {what}")
        time.sleep(0.02)


def _eligible(url: str, arm_id: str) -> bool:
    r = alloc(url, unit_id=BANDIT_UNIT, eligible=[arm_id])
    return r.status_code == 200 and r.json()["arm_id"] == arm_id


def _listed(url: str) -> dict[str, bool]:
    return {a["arm_id"]: a["active"]
            for a in _CLIENT.get(url + "/v1/arms", headers=TOKEN).json()}


def test_arm_registered_on_one_server_is_served_by_the_other(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)  # both servers share model.dir
    a_app = create_app(cfg, arms=base_arms(), sink=ListSink(), seed=1)
    b_app = create_app(cfg, arms=base_arms(), sink=ListSink(), seed=2)
    with LiveServer(a_app) as a, LiveServer(b_app) as b:
        assert not _eligible(b.url, "fresh")
        r = _CLIENT.post(a.url + "/v1/arms", json={"arm_id": "fresh", "kind": "expert"},
                         headers=ADMIN)
        assert r.status_code == 201, r.text
        # the server that took the request serves the arm at once, from the file
        assert _eligible(a.url, "fresh")
        assert "fresh" in RegistryFile(cfg.model.dir).read()
        _eventually(lambda: _eligible(b.url, "fresh"), "server B serves the new arm")
        assert _listed(b.url)["fresh"] is True
        # retiring on B reaches A; the arm stays listed (retired, not deleted)
        assert _CLIENT.delete(b.url + "/v1/arms/fresh", headers=ADMIN).json()["active"] is False
        _eventually(lambda: _listed(a.url).get("fresh") is False, "server A sees it retired")
        assert alloc(a.url, unit_id=BANDIT_UNIT, eligible=["fresh"]).status_code == 422
        # a start-up arm retired on one server is retired on the other too
        assert _CLIENT.delete(a.url + "/v1/arms/expert-2", headers=ADMIN).status_code == 200
        _eventually(lambda: _listed(b.url)["expert-2"] is False, "server B retires expert-2")
        # two servers registering different arms at once: both arms survive everywhere
        ra = _CLIENT.post(a.url + "/v1/arms", json={"arm_id": "from-a"}, headers=ADMIN)
        rb = _CLIENT.post(b.url + "/v1/arms", json={"arm_id": "from-b"}, headers=ADMIN)
        assert (ra.status_code, rb.status_code) == (201, 201)
        _eventually(lambda: _eligible(a.url, "from-b"), "server A serves B's arm")
        _eventually(lambda: _eligible(b.url, "from-a"), "server B serves A's arm")
        assert _eligible(a.url, "from-a") and _eligible(b.url, "from-b")
        health = _CLIENT.get(b.url + "/healthz").json()["model"]
        assert health["registry_error"] is None and health["registry_revision"] >= 4


def test_arms_change_answers_503_when_the_registry_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cfg = make_config(tmp_path)
    cfg = dataclasses.replace(
        cfg, model=ModelConfig(dir=str(blocker / "snap")))
    with LiveServer(create_app(cfg, arms=base_arms(), sink=ListSink())) as server:
        r = _CLIENT.post(server.url + "/v1/arms", json={"arm_id": "fresh"}, headers=ADMIN)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"]
        item = r.json()["detail"][0]
        assert item["field"] == "registry" and "arms-registry.json" in item["msg"]
        assert "fresh" not in _listed(server.url)  # nothing changed
        r = _CLIENT.delete(server.url + "/v1/arms/expert-1", headers=ADMIN)
        assert r.status_code == 503 and _listed(server.url)["expert-1"] is True
        # validation still comes first, and allocation is unaffected
        r = _CLIENT.post(server.url + "/v1/arms", json={"arm_id": ""}, headers=ADMIN)
        assert r.status_code == 422
        assert alloc(server.url).status_code == 200


def test_corrupt_registry_keeps_the_last_good_arms_and_is_reported(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    with LiveServer(create_app(cfg, arms=base_arms(), sink=ListSink(), seed=1)) as server:
        assert _CLIENT.post(server.url + "/v1/arms", json={"arm_id": "fresh"},
                            headers=ADMIN).status_code == 201
        path = Path(cfg.model.dir) / REGISTRY_NAME
        path.write_text(path.read_text().replace('"fresh"', '"fresh2"'))

        def reported() -> bool:
            err = _CLIENT.get(server.url + "/healthz").json()["model"]["registry_error"]
            return err is not None and "checksum" in err and str(path) in err

        _eventually(reported, "healthz names the corrupt registry")
        assert _eligible(server.url, "fresh")
        r = _CLIENT.post(server.url + "/v1/arms", json={"arm_id": "other"}, headers=ADMIN)
        assert r.status_code == 503 and "checksum" in r.json()["detail"][0]["msg"]
