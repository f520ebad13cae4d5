"""The allocation server: ``POST /v1/allocate`` over FastAPI/uvicorn (see docs/serving.md).

Import :func:`bandit.serving.app.create_app` to embed it; ``switchboard serve`` runs it.
"""

from __future__ import annotations

__all__: list[str] = []
