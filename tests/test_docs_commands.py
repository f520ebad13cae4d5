"""Docs that cannot drift: the shell commands of README.md and docs/*.md, executed as written.

Every fenced ``sh``/``bash``/``shell`` block is a list of commands (a command continues over
``\\`` line ends and open quotes; ``#`` lines are comments). Each command is run with
``bash -e -o pipefail`` in a scratch folder holding the repository's example files
(``switchboard.toml``, ``arms.json``, ``docs/examples/``), one scratch folder per document,
blocks in document order, and the test fails naming the file, line and command. The
services the commands need are the test's:

* a tansu Kafka-protocol broker of the document's own (``bandit.embedded.broker``), given
  to every command as ``SWITCHBOARD_KAFKA__BOOTSTRAP_SERVERS``;
* the embedded store is chdb in the scratch folder (the docs' ``chdb://var/chdb``); for a
  document that runs ``lift`` or ``dashboard`` it holds a finished synthetic experiment
  ``exp-default`` (``bandit.testing.synthetic``), as a learner would have left it;
* long-running commands (``switchboard serve``, ``switchboard dashboard``, ``switchboard
  learn`` without ``--max-idle-s``) are started in the background as written, waited for
  (serve: ``/healthz``; dashboard: the URL it prints, then Streamlit's health endpoint;
  learn: still running after a settling time), kept up for the rest of their block and then
  stopped with SIGTERM, which must end them with status 0. Running the same sub-command
  again stops the running one first (a restart). ``serve`` gets a free port through
  ``SWITCHBOARD_SERVE__PORT``;
* a block that calls ``$SWITCHBOARD_URL`` with no documented ``serve`` running gets a server
  like the demo's: ``switchboard.toml`` and ``arms.json``, experiment id ``demo``, accepting
  the demo's tokens (``demo-token``, ``demo-admin-token``) and ``serve --dev``'s
  (``dev-token``, ``dev-admin-token``);
* ``NAME=value`` lines of a block (``$(...)`` included) stay in effect for the commands after
  them in that block.

Documented placeholders (each explained in the doc where it appears): ``$SWITCHBOARD_URL``
(the allocation server's base URL) is an environment variable the test sets; nothing else
in a command is substituted. ``<!-- docs-test: skip (REASON) -->`` before a block exempts it
(the reason is required; kept few); such a block's ``switchboard`` commands are still
parsed by the real CLI parser. Unlabelled fences must not hold commands.

Also checked without running anything: every ``switchboard`` command parses, files passed
with ``--config`` / ``--arms`` / ``--log`` exist in the repository or are written by an
earlier command of the same document, files documented commands write are git-ignored, and
no link points outside the repository.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bandit.embedded.broker import EmbeddedBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(
    r"(?:<!--\s*docs-test:\s*(?P<tag>\w+)(?P<reason>[^>]*)-->\s*\n)?```(?P<lang>\w*)\n(?P<body>.*?)```",
    re.S)
_SHELL = ("sh", "bash", "shell")
#: flags whose value is a file a command writes / a file it reads
_WRITES = ("--out", "--write-log", "--write-config", "--workdir")
_READS = ("--config", "--arms", "--log")
#: what the scratch folder holds from the repository
_EXAMPLES = ("switchboard.toml", "arms.json", "docs/examples")
_DEMO_SERVER_ENV = {"SWITCHBOARD_SERVE__TOKENS": '["demo-token", "dev-token"]',
                    "SWITCHBOARD_SERVE__ADMIN_TOKENS": '["demo-admin-token", "dev-admin-token"]',
                    "SWITCHBOARD_EXPERIMENT__ID": "demo"}
_ASSIGNMENT = re.compile(r"(export\s+)?[A-Za-z_]\w*=(\$\(.*\)|\S*)\s*(#.*)?", re.S)
_START_TIMEOUT_S = 180.0
_SEED_STORE = """
from bandit.store import open_store
from bandit.testing.synthetic import generate_experiment, insert_experiment
store = open_store("chdb://var/chdb")
insert_experiment(store, generate_experiment(2000, 0.2, seed=2026, days=45,
                                             experiment_id="exp-default"))
store.close()
"""
_LEARN_SETTLE_S = 10.0


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str  # as written, continuation lines included
    tag: str
    block: int = 0  # the line its fenced block starts on

    @property
    def argv(self) -> tuple[str, ...]:
        """The words of the command, up to a redirection or the next command."""
        words = shlex.split(self.text.replace("\\\n", " "), comments=True)
        for i, w in enumerate(words):
            if w in (">", ">>", "|", "&&", ";", "&"):
                return tuple(words[:i])
        return tuple(words)

    @property
    def switchboard(self) -> tuple[str, ...] | None:
        """The switchboard argv after the program name, when this is a switchboard command."""
        argv = self.argv
        if argv and re.fullmatch(r"(\.venv/bin/)?switchboard", argv[0]):
            return argv[1:]
        return None

    @property
    def subcommand(self) -> str | None:
        args = self.switchboard
        if args is None:
            return None
        rest = list(args)
        while rest and rest[0].startswith("-"):
            rest = rest[2:] if rest[0] == "--config" else rest[1:]
        return rest[0] if rest else None

    @property
    def long_running(self) -> bool:
        sub = self.subcommand
        return sub in ("serve", "dashboard") or (sub == "learn" and "--max-idle-s" not in self.argv)

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text.splitlines()[0]}"


def _complete(text: str) -> bool:
    """Whether ``text`` is a whole command: no ``\\``/``|``/``&&`` line end, no open quote or
    parenthesis."""
    if text.rstrip().endswith(("\\", "|", "&&")) or text.count("(") > text.count(")"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def _split(body: str, first_line: int) -> Iterator[tuple[int, str]]:
    """(line number, command text) for each command of a shell block."""
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].strip() or lines[i].lstrip().startswith("#"):
            i += 1
            continue
        start, text = i, lines[i]
        while not _complete(text) and i + 1 < len(lines):
            i += 1
            text += "\n" + lines[i]
        i += 1
        yield first_line + start, text


def _blocks() -> list[tuple[str, int, str, str, str]]:
    """(doc, first body line, lang, tag, body) of every fenced block."""
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in _BLOCK.finditer(text):
            tag = m.group("tag") or ""
            if tag == "skip":
                reason = m.group("reason").strip()
                assert re.fullmatch(r"\(.{8,}\)", reason), (
                    f"{doc.name}:{text[:m.start()].count(chr(10)) + 1}: a skip needs a reason, "
                    f"<!-- docs-test: skip (why) -->")
            elif tag:
                raise AssertionError(f"{doc.name}: unknown docs-test tag {tag!r} (known: skip)")
            line = text[:m.start("body")].count("\n") + 1
            out.append((doc.name, line, m.group("lang"), tag, m.group("body")))
    return out


BLOCKS = _blocks()
COMMANDS = [Command(doc, n, cmd, tag, line) for doc, line, lang, tag, body in BLOCKS
            if lang in _SHELL for n, cmd in _split(body, line)]


def test_docs_have_commands() -> None:
    assert len(COMMANDS) >= 20
    assert sum(c.tag != "skip" for c in COMMANDS) >= 15
    assert {c.subcommand for c in COMMANDS if c.tag != "skip"} >= {
        "serve", "learn", "topics", "lift", "dashboard", "simulate", "replay", "evaluate", "tune"}


@pytest.mark.parametrize("block", [b for b in BLOCKS if b[2] == ""], ids=lambda b: f"{b[0]}:{b[1]}")
def test_unlabelled_blocks_hold_no_commands(block: tuple[str, int, str, str, str]) -> None:
    doc, line, _, _, body = block
    first = body.lstrip().split(maxsplit=1)[0] if body.strip() else ""
    assert first not in ("switchboard", ".venv/bin/switchboard", "curl", "make", "python"), (
        f"{doc}:{line}: a command block must be fenced as ```sh so the docs test runs it")


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.switchboard is not None], ids=str)
def test_documented_command_parses(cmd: Command) -> None:
    from bandit.cli import build_parser

    assert cmd.switchboard is not None
    try:
        args = build_parser().parse_args(list(cmd.switchboard))
    except SystemExit as exc:
        pytest.fail(f"{cmd} does not parse (exit {exc.code})")
    assert getattr(args, "func", None) is not None, f"{cmd}: no such command"


def _flag_values(cmd: Command, flags: tuple[str, ...]) -> list[str]:
    argv = list(cmd.argv)
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in flags]


def _written_before(cmd: Command) -> set[str]:
    earlier = COMMANDS[: COMMANDS.index(cmd)]
    return {p for c in earlier if c.doc == cmd.doc for p in _flag_values(c, _WRITES)}


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if _flag_values(c, _READS)], ids=str)
def test_documented_input_files_exist(cmd: Command) -> None:
    for path in _flag_values(cmd, _READS):
        assert (ROOT / path).is_file() or path in _written_before(cmd), (
            f"{cmd}: {path} is neither in the repository nor written by an earlier command of "
            f"{cmd.doc}")


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if _flag_values(c, _WRITES) or ">" in c.text],
                         ids=str)
def test_files_written_by_documented_commands_are_git_ignored(cmd: Command) -> None:
    words = shlex.split(cmd.text.replace("\\\n", " "), comments=True)
    paths = _flag_values(cmd, _WRITES) + [words[i + 1] for i, w in enumerate(words[:-1]) if w == ">"]
    for path in paths:
        probe = f"{path.rstrip('/')}/summary.json" if not Path(path).suffix else path
        rc = subprocess.run(["git", "check-ignore", "-q", "--no-index", probe], cwd=ROOT).returncode
        assert rc == 0, f"{cmd}: {path} is not git-ignored"


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)[^)]*\)|<(https?://[^>]+)>")


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_no_link_points_outside_the_repository(doc: Path) -> None:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    for m in _LINK.finditer(text):
        target = m.group(1) or m.group(2)
        assert not re.match(r"[a-z][a-z0-9+.-]*://|//|mailto:", target, re.I), f"{doc.name}: {target}"
        path = target.split("#", 1)[0]
        if path:
            assert (doc.parent / path).resolve().exists(), f"{doc.name}: {target} does not exist"


# --- execution ------------------------------------------------------------------------------


class _Daemon:
    """A long-running documented command, started as written, stopped with SIGTERM."""

    def __init__(self, cmd: Command, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.cmd, self.log = cmd, log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(["bash", "-e", "-c", "exec " + cmd.text], cwd=cwd, env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]

    def _fail(self, why: str) -> None:
        pytest.fail(f"{self.cmd}: {why}\n{self.output()}")

    def wait_http(self, url: str) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"exited with status {self.proc.returncode} before answering {url}")
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self._fail(f"did not answer {url} within {_START_TIMEOUT_S:.0f} s")

    def wait_printed_url(self) -> str:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"exited with status {self.proc.returncode} before printing its URL")
            m = re.search(r"http://127\.0\.0\.1:\d+", self.output())
            if m:
                return m.group(0)
            time.sleep(0.5)
        self._fail(f"printed no URL within {_START_TIMEOUT_S:.0f} s")
        raise AssertionError  # unreachable: pytest.fail raises

    def settle(self) -> None:
        try:
            self.proc.wait(timeout=_LEARN_SETTLE_S)
        except subprocess.TimeoutExpired:
            return
        self._fail(f"exited with status {self.proc.returncode}; it should keep running")

    def stop(self, check: bool = True) -> None:
        """SIGTERM; with ``check``, fail unless it ends with status 0 within 60 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self._out.close()
            if check:
                self._fail("did not stop within 60 s of SIGTERM")
            return
        self._out.close()
        if check and rc != 0:
            self._fail(f"ended with status {rc} on SIGTERM (expected 0)")


def _runnable_docs() -> list[str]:
    return sorted({c.doc for c in COMMANDS if c.tag != "skip"})


@pytest.fixture
def docs_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of the document's own (its topics are the documented default names); one
    per document lets the documents run on different workers at once."""
    b = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    yield b
    b.stop()


def _run_commands(cmds: list[Command], tmp_path: Path, bootstrap_servers: str) -> None:
    """Run ``cmds`` (one document's, in order) as written; fail naming the one that fails."""
    work = tmp_path / "work"
    work.mkdir()
    for name in _EXAMPLES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name)
        elif src.exists():
            shutil.copy(src, work / name)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update({
        "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "SWITCHBOARD_KAFKA__BOOTSTRAP_SERVERS": bootstrap_servers,
        "SWITCHBOARD_SERVE__PORT": str(port),
        "SWITCHBOARD_URL": f"http://127.0.0.1:{port}",
    })
    (work / ".venv").symlink_to(ROOT / ".venv")  # for commands written as .venv/bin/switchboard
    if any(c.subcommand in ("lift", "dashboard") for c in cmds):
        # the store such a reader finds after a run: a finished experiment, in its own process
        # (chdb: one data directory per process)
        subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", _SEED_STORE], cwd=work,
                       env=env, check=True, timeout=600)
    url = env["SWITCHBOARD_URL"]
    blocks: dict[int, list[Command]] = {}
    for c in cmds:
        blocks.setdefault(c.block, []).append(c)
    for n, (_, block_cmds) in enumerate(sorted(blocks.items())):
        daemons: list[_Daemon] = []
        ok = False
        assignments = ""  # NAME=value lines of this block, in effect for the commands after them
        try:
            for cmd in block_cmds:
                if not any(d.cmd.subcommand == "serve" for d in daemons) and "$SWITCHBOARD_URL" in cmd.text:
                    demo = Command(cmd.doc, cmd.line, "switchboard --config switchboard.toml serve "
                                   "--arms arms.json", "")
                    d = _Daemon(demo, work, {**env, **_DEMO_SERVER_ENV}, tmp_path / f"demo-serve-{n}.log")
                    daemons.append(d)
                    d.wait_http(url + "/healthz")
                for old in [d for d in daemons if cmd.subcommand and d.cmd.subcommand == cmd.subcommand]:
                    daemons.remove(old)  # the same program again: a restart
                    old.stop()
                if cmd.long_running:
                    d = _Daemon(cmd, work, env, tmp_path / f"daemon-{cmd.line}.log")
                    daemons.append(d)
                    if cmd.subcommand == "serve":
                        d.wait_http(url + "/healthz")
                    elif cmd.subcommand == "dashboard":
                        d.wait_http(d.wait_printed_url() + "/_stcore/health")
                    else:
                        d.settle()
                    continue
                script = assignments + cmd.text
                if _ASSIGNMENT.fullmatch(cmd.text):
                    assignments += cmd.text + "\n"
                proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=work,
                                      env=env, capture_output=True, text=True, timeout=900)
                if proc.returncode != 0:
                    extra = "".join(f"\n--- {d.cmd}:\n{d.output()}" for d in daemons)
                    pytest.fail(f"{cmd} failed with status {proc.returncode}:\n"
                                f"{proc.stdout[-1500:]}\n{proc.stderr[-2500:]}{extra}")
            ok = True
        finally:
            while daemons:  # after a failure, only clean up: the first failure is the report
                daemons.pop().stop(check=ok)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("doc", _runnable_docs())
def test_documented_commands_run(doc: str, tmp_path: Path, docs_broker: EmbeddedBroker) -> None:
    """Every command of ``doc`` outside skip blocks, executed as written, in order."""
    _run_commands([c for c in COMMANDS if c.doc == doc and c.tag != "skip"], tmp_path,
                  docs_broker.bootstrap_servers)


def test_failing_command_is_named_with_file_and_line(tmp_path: Path) -> None:
    """The runner itself: a command that fails fails the test, naming file, line and command
    (and a variable set earlier in its block is in effect)."""
    cmds = [Command("x.md", 3, "GREETING=$(echo hi)", "", 2),
            Command("x.md", 4, 'test "$GREETING" = hi', "", 2),
            Command("x.md", 8, "ls docs/examples/clicks.csv && exit 3", "", 7)]
    with pytest.raises(pytest.fail.Exception, match=r"x\.md:8: ls docs/examples/clicks\.csv && exit 3 "
                       r"failed with status 3"):
        _run_commands(cmds, tmp_path, "127.0.0.1:9")


def test_long_running_command_that_exits_is_named(tmp_path: Path) -> None:
    """A documented server that stops at once (here: refused beyond loopback without tokens)
    fails the test with its file, line and output."""
    cmds = [Command("y.md", 5, "switchboard serve --host 0.0.0.0", "", 4)]
    assert cmds[0].long_running
    with pytest.raises(pytest.fail.Exception,
                       match=r"y\.md:5: switchboard serve --host 0\.0\.0\.0: exited with status [1-9]"):
        _run_commands(cmds, tmp_path, "127.0.0.1:9")
