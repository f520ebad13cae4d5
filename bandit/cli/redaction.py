"""Redact secrets (DSN passwords, bearer tokens, configured tokens) from text shown or logged.

One helper for every place that displays a DSN, an error message or a configuration: the
dashboard's captions and empty states, CLI error lines, ``switchboard config`` and logs.

>>> redact("http://reader:s3cret@clickhouse:8123/db")
'http://reader:***@clickhouse:8123/db'
>>> redact("Authorization: Bearer abc.def")
'Authorization: Bearer ***'
>>> redact("password=hunter2&user=x")
'password=***&user=x'
>>> redact("token t0k is wrong", secrets=["t0k"])
'token *** is wrong'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["MASK", "redact", "redact_config"]

MASK = "***"

#: ``scheme://user:password@host`` — the password part of any URL-style DSN
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<secret>[^\s@/]+)(?=@)")
#: ``Bearer <token>`` in headers and messages
_BEARER = re.compile(r"(?P<head>\bBearer\s+)(?P<secret>[^\s,;\"']+)", re.IGNORECASE)
#: ``password=...``, ``token: ...``, ``api_key=...`` in query strings, messages and TOML
_KEY_VALUE = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|secret|token|tokens|admin_tokens|api_key|apikey|"
    r"access_key|secret_key)\b\s*[=:]\s*\[?\s*[\"']?)(?P<secret>[^\s&,;\"'\]]+)",
    re.IGNORECASE,
)
#: configuration keys whose values are secrets, wherever they appear
_SECRET_KEYS = frozenset(
    {"password", "token", "tokens", "admin_tokens", "api_key", "secret", "access_key", "secret_key"}
)


def redact(text: object, secrets: Iterable[str] = ()) -> str:
    """``text`` with DSN passwords, bearer tokens, ``key=secret`` values and each of
    ``secrets`` (e.g. the configured API tokens) replaced by ``***``."""
    out = str(text)
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        out = out.replace(s, MASK)
    out = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, out)
    out = _BEARER.sub(lambda m: m.group("head") + MASK, out)
    return _KEY_VALUE.sub(lambda m: m.group("head") + MASK, out)


def redact_config(value: Any) -> Any:
    """A copy of a plain (JSON-like) configuration tree with secrets masked: values under
    secret keys (``tokens``, ``password``...) become ``***`` (each item of a list), and every
    string has its DSN passwords redacted."""
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if str(k).lower() in _SECRET_KEYS:
                out[k] = [MASK for _ in v] if isinstance(v, list | tuple) else (MASK if v else v)
            else:
                out[k] = redact_config(v)
        return out
    if isinstance(value, list | tuple):
        return [redact_config(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value
