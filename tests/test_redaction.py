"""bandit.cli.redaction: DSN passwords and tokens never survive into displayed text."""

from __future__ import annotations

import pytest

from bandit.cli.redaction import MASK, redact, redact_config

CASES = [
    ("http://reader:pl4nted-Pw@ch:8123/db", "pl4nted-Pw", "URL DSN password"),
    ("clickhouse+https://u:pl4nted-Pw@ch.example:8443", "pl4nted-Pw", "scheme with + and ."),
    ("cannot open store 'https://u:pl4nted-Pw@h:8443': timed out", "pl4nted-Pw", "inside an error"),
    ("Authorization: Bearer pl4nted-tok", "pl4nted-tok", "bearer header"),
    ("https://h/?user=x&password=pl4nted-Pw", "pl4nted-Pw", "password query parameter"),
    ('tokens = ["pl4nted-tok"]', "pl4nted-tok", "TOML token list"),
]


@pytest.mark.parametrize(("text", "secret", "description"), CASES)
def test_redact_removes_secret(text: str, secret: str, description: str) -> None:
    out = redact(text)
    assert secret not in out, description
    assert MASK in out


def test_redact_keeps_what_is_not_secret() -> None:
    assert redact("chdb:///var/demo/chdb") == "chdb:///var/demo/chdb"
    assert redact("http://ch:8123/db") == "http://ch:8123/db"
    assert redact("http://u:pw@h:1") == "http://u:***@h:1"


def test_redact_explicit_secrets() -> None:
    assert redact("got abc and abcdef", secrets=["abcdef", "abc", ""]) == "got *** and ***"


def test_redact_config_masks_secret_keys_and_dsns() -> None:
    cfg = {"serve": {"tokens": ["a", "b"], "admin_tokens": [], "port": 8080},
           "store": {"dsn": "http://u:pw@h:8123", "database": "switchboard"}}
    out = redact_config(cfg)
    assert out["serve"] == {"tokens": [MASK, MASK], "admin_tokens": [], "port": 8080}
    assert out["store"]["dsn"] == "http://u:***@h:8123"
    assert cfg["serve"]["tokens"] == ["a", "b"]  # the caller's tree is not mutated
