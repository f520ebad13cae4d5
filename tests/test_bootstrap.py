"""Start-up safety and first start from nothing.

* The server has no built-in credentials: with none configured it refuses to start (one
  line naming what to set), except on loopback with the explicit development flag; tokens
  come from files (Kubernetes / Docker secrets); a token never appears in an error.
* ``switchboard arms seed FILE`` registers the initial experts in the shared registry,
  idempotently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bandit.cli import main
from bandit.config import (
    DEV_ADMIN_TOKEN,
    DEV_TOKEN,
    MIN_TOKEN_CHARS,
    ServeConfig,
    is_loopback,
    load_config,
    resolve_serve_tokens,
)
from bandit.errors import ConfigError
from bandit.registry import RegistryFile

STRONG = "s" * MIN_TOKEN_CHARS
STRONG_ADMIN = "a" * (MIN_TOKEN_CHARS + 4)
EXE = Path(sys.executable).parent / "switchboard"


# --------------------------------------------------------------------------- credentials


def test_config_has_no_builtin_tokens() -> None:
    serve = load_config(env={}).serve
    assert serve.tokens == () and serve.admin_tokens == ()
    assert not serve.insecure_dev_tokens


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("server", False), ("", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# (serve settings, bind host, field named by the error, description)
REFUSED = [
    ({}, "127.0.0.1", "serve.tokens", "no tokens, even on loopback"),
    ({}, "0.0.0.0", "serve.tokens", "no tokens beyond loopback"),
    ({"insecure_dev_tokens": True}, "0.0.0.0", "serve.insecure_dev_tokens", "dev flag beyond loopback"),
    ({"insecure_dev_tokens": True, "tokens": (STRONG,)}, "10.0.0.5", "serve.insecure_dev_tokens",
     "dev flag beyond loopback even with tokens"),
    ({"tokens": ("change-me",)}, "0.0.0.0", "serve.tokens[0]", "short token beyond loopback"),
    ({"tokens": (STRONG,), "admin_tokens": (DEV_ADMIN_TOKEN,)}, "0.0.0.0", "serve.admin_tokens[0]",
     "development admin token beyond loopback"),
]


@pytest.mark.parametrize(("settings", "host", "field", "description"), REFUSED,
                         ids=[r[3] for r in REFUSED])
def test_resolve_serve_tokens_refuses(settings: dict[str, object], host: str, field: str,
                                      description: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_serve_tokens(ServeConfig(**settings), host)  # type: ignore[arg-type]
    assert info.value.field == field, description
    assert "\n" not in str(info.value)
    assert "change-me" not in str(info.value)


def test_dev_flag_on_loopback_accepts_the_development_tokens() -> None:
    serve = resolve_serve_tokens(ServeConfig(insecure_dev_tokens=True), "127.0.0.1")
    assert serve.tokens == (DEV_TOKEN,) and serve.admin_tokens == (DEV_ADMIN_TOKEN,)
    # configured tokens win over the flag: the development tokens are then not accepted
    serve = resolve_serve_tokens(ServeConfig(insecure_dev_tokens=True, tokens=("mine",)), "::1")
    assert serve.tokens == ("mine",) and serve.admin_tokens == ()


def test_tokens_from_files_are_added(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text(f"\n  {STRONG}  \n{STRONG}x\n\n")
    (tmp_path / "admin").write_text(STRONG_ADMIN)
    env = {"SWITCHBOARD_SERVE__TOKENS_FILE": str(tmp_path / "tokens"),
           "SWITCHBOARD_SERVE__ADMIN_TOKENS_FILE": str(tmp_path / "admin"),
           "SWITCHBOARD_SERVE__TOKENS": f'["{STRONG}"]'}
    serve = resolve_serve_tokens(load_config(env=env).serve, "0.0.0.0")
    assert serve.tokens == (STRONG, STRONG + "x")
    assert serve.admin_tokens == (STRONG_ADMIN,)


@pytest.mark.parametrize(("content", "reason"), [
    (None, "cannot be read"), ("\n \n", "contains no token"), (b"\xff\xfe", "UTF-8"),
])
def test_unusable_token_file_is_named(tmp_path: Path, content: str | bytes | None, reason: str) -> None:
    path = tmp_path / "tokens"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=reason) as info:
        resolve_serve_tokens(ServeConfig(tokens_file=str(path)), "127.0.0.1")
    assert info.value.field == "serve.tokens_file" and str(path) in str(info.value)


def test_token_errors_and_reprs_never_show_a_token() -> None:
    secret = "pl4nted-secret value"
    with pytest.raises(ConfigError) as info:
        ServeConfig(tokens=(secret,))
    assert "pl4nted" not in str(info.value)
    assert "pl4nted" not in repr(ServeConfig(tokens=("pl4nted-ok",), admin_tokens=("pl4nted-adm",)))


def _write_config(tmp_path: Path, serve: str) -> Path:
    cfg = tmp_path / "switchboard.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "127.0.0.1:1"\n\n[serve]\n'
                   f'snapshot_dir = "{tmp_path / "snap"}"\nspill_dir = "{tmp_path / "spill"}"\n{serve}\n')
    return cfg


def test_serve_without_tokens_exits_with_one_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write_config(tmp_path, "")
    assert main(["--config", str(cfg), "serve", "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "serve.tokens" in err and "SWITCHBOARD_SERVE__TOKENS_FILE" in err and "--dev" in err
    assert main(["--config", str(cfg), "serve", "--dev", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "serve.insecure_dev_tokens" in capsys.readouterr().err


def test_serve_refusal_from_the_real_entry_point(tmp_path: Path) -> None:
    """What an operator sees: exit status 2 and one line, no traceback, nothing bound."""
    cfg = _write_config(tmp_path, 'host = "0.0.0.0"\ntokens = ["change-me"]')
    proc = subprocess.run([str(EXE), "--config", str(cfg), "serve", "--port", "1"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SWITCHBOARD_CONFIG": ""})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "change-me" not in proc.stderr
    assert "serve.tokens[0]" in proc.stderr


# --------------------------------------------------------------------------- arms seed

ARMS = [{"arm_id": "gpt35", "kind": "baseline"},
        {"arm_id": "roleplay-7b", "kind": "expert"},
        {"arm_id": "writer-13b"}]


def _seed(tmp_path: Path, arms: object, *extra: str) -> int:
    path = tmp_path / "arms.json"
    path.write_text(json.dumps(arms))
    cfg = _write_config(tmp_path, "")
    return main(["--config", str(cfg), "arms", "seed", str(path), *extra])


def test_arms_seed_registers_from_nothing_and_is_idempotent(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert _seed(tmp_path, ARMS) == 0
    registry = RegistryFile(tmp_path / "snap")
    first = registry.read()
    assert first.arm_ids() == ["gpt35", "roleplay-7b", "writer-13b"]
    assert first.get("gpt35").kind == "baseline" and first.get("writer-13b").kind == "expert"
    assert "3 registered" in capsys.readouterr().out
    # a second run (every `compose up`, a re-run Job) changes nothing
    assert _seed(tmp_path, ARMS) == 0
    assert registry.read() == first
    assert "0 registered, 3 already present" in capsys.readouterr().out


def test_arms_seed_never_reactivates_a_retired_arm(tmp_path: Path) -> None:
    assert _seed(tmp_path, ARMS) == 0
    registry = RegistryFile(tmp_path / "snap")
    registry.retire("roleplay-7b")
    assert _seed(tmp_path, [*ARMS, {"arm_id": "new-expert"}]) == 0
    state = registry.read()
    assert not state.get("roleplay-7b").active
    assert state.get("new-expert").active


@pytest.mark.parametrize(("arms", "needle"), [
    ({"arm_id": "x"}, "must be a JSON list"),
    ([], "names no arm"),
    ([{"kind": "expert"}], "arm_id"),
    ([{"arm_id": "a"}, {"arm_id": "a"}], "twice"),
])
def test_arms_seed_rejects_a_bad_file_and_writes_nothing(tmp_path: Path, arms: object, needle: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert _seed(tmp_path, arms) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "snap" / "arms-registry.json").exists()
