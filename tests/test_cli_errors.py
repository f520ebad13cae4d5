"""The command line as a person meets it: mistakes and missing services end in one clear
line (secrets redacted), a bad flag in that sub-command's usage, every option's help shows
its default, and ``simulate`` stops on one signal leaving no worker behind."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bandit.cli import HelpFormatter, build_parser, main, subparsers
from bandit.embedded.broker import free_port
from tests.fixtures.terminal import as_from_a_terminal

ROOT = Path(__file__).resolve().parent.parent
PLANTED = "pl4nted-Pw-7731"


def _cli(*args: str, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bandit.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _options() -> list[tuple[str, argparse.Action, argparse.ArgumentParser]]:
    out = []
    for name, sp in sorted(subparsers(build_parser()).items()):
        for action in sp._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction) \
                    and action.help != argparse.SUPPRESS and not action.required:
                out.append((name, action, sp))
    return out


@pytest.mark.parametrize(("command", "action", "parser"), _options(),
                         ids=lambda v: v.option_strings[0] if isinstance(v, argparse.Action) else None)
def test_every_option_has_help_that_shows_its_default(command: str, action: argparse.Action,
                                                      parser: argparse.ArgumentParser) -> None:
    assert action.help, f"switchboard {command} {action.option_strings[0]} has no help text"
    text = parser._get_formatter()._get_help_string(action) % {**vars(action), "prog": command}
    assert "default" in text.lower(), f"switchboard {command} {action.option_strings[0]}: {text!r}"


def test_help_formatter_appends_default_and_flag_state() -> None:
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--n", type=int, default=3, help="count")
    p.add_argument("--on", action="store_true", help="switch")
    text = p.format_help()
    assert "count (default: 3)" in text and "switch (default: off)" in text


def test_bad_flag_prints_the_subcommands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["topics", "--no-such-flag"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: switchboard topics" in err and "--no-such-flag" in err


def test_topics_without_a_broker_is_one_line() -> None:
    proc = _cli("topics", "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--timeout-s", "3")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "no Kafka broker answered" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unreachable_dsn_is_one_line_without_the_password() -> None:
    dsn = f"http://reader:{PLANTED}@127.0.0.1:{free_port()}"
    proc = _cli("lift", "--experiment", "demo", env={"SWITCHBOARD_STORE__DSN": dsn})
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert PLANTED not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_config_never_prints_tokens_or_passwords() -> None:
    env = {"SWITCHBOARD_STORE__DSN": f"http://reader:{PLANTED}@ch:8123",
           "SWITCHBOARD_SERVE__TOKENS": f'["{PLANTED}-tok"]'}
    proc = _cli("config", env=env)
    assert proc.returncode == 0, proc.stderr
    assert PLANTED not in proc.stdout + proc.stderr
    json.loads(proc.stdout)


def test_arms_file_row_without_arm_id_is_one_line(tmp_path: Path) -> None:
    arms = tmp_path / "arms.json"
    arms.write_text(json.dumps([{"kind": "baseline"}]))
    proc = _cli("learn", "--arms", str(arms), "--bootstrap-servers", f"127.0.0.1:{free_port()}",
                "--max-idle-s", "1", env={"SWITCHBOARD_STORE__DSN": f"chdb://{tmp_path / 'chdb'}"})
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "arm_id" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_simulate_stops_on_one_signal_leaving_no_worker(tmp_path: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        as_from_a_terminal(
            [sys.executable, "-m", "bandit.cli", "simulate", "--policies", "linucb,greedy",
             "--seeds", "4", "--steps", "2000000", "--workers", "2", "--json",
             "--out", str(tmp_path / "out")]),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    children: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(children) < 2:
        children |= _children(proc.pid)
        time.sleep(0.2)
    assert len(children) >= 2, "the worker processes started"
    proc.send_signal(sig)
    try:
        _out, err = proc.communicate(timeout=180)  # one signal, however loaded the machine
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode != 0
    assert "Traceback" not in err, err[-2000:]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(c) for c in children):
        time.sleep(0.2)
    assert not [c for c in children if _alive(c)], "no worker outlives the command"


def _children(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from bandit import cli

    before = logging.getLogRecordFactory()
    try:
        cli._redact_logs()
        with caplog.at_level(logging.INFO):
            logging.getLogger("switchboard.test").info("opening %s", f"http://u:{PLANTED}@h:8123")
        assert PLANTED not in caplog.text and "http://u:***@h:8123" in caplog.text
    finally:
        logging.setLogRecordFactory(before)
