"""Docs that cannot drift: the shell commands of README.md and docs/*.md as written.

Every ``switchboard`` command in a fenced ``sh``/``bash`` block is parsed by the real CLI
parser (a renamed flag or a wrong value type fails here); files the docs pass with
``--config`` / ``--arms`` exist in the repository; files that documented commands write
are git-ignored; no link points outside the repository. Blocks preceded by
``<!-- docs-test: run -->`` are also executed as written (in a scratch folder holding the
repository's example files), a slow test; ``<!-- docs-test: skip REASON -->`` exempts a
block from parsing (e.g. a command shown with a value the reader must choose).

Documented placeholders: ``[--flag VALUE]`` (optional part: kept), ``MS`` (epoch ms) and
``<...>`` inside comments.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(
    r"(?:<!--\s*docs-test:\s*(?P<tag>\w+)[^>]*-->\s*\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
_PLACEHOLDERS = {"MS": "1767571200000"}
#: flags whose value is a file a command writes / a file it reads
_WRITES = ("--out", "--write-log", "--write-config", "--workdir", "--stdout-file")
_READS = ("--config", "--arms")


@dataclass(frozen=True)
class Command:
    doc: str
    line: str
    argv: tuple[str, ...]
    tag: str

    def __str__(self) -> str:
        return f"{self.doc}: {self.line}"


def _commands() -> list[Command]:
    out = []
    for doc in DOCS:
        for m in _BLOCK.finditer(doc.read_text(encoding="utf-8")):
            if m.group("lang") not in ("sh", "bash", "shell"):
                continue
            body = re.sub(r"\\\n\s*", " ", m.group("body"))
            for raw in body.splitlines():
                line = raw.split(" #", 1)[0].strip()
                if not re.match(r"(\.venv/bin/)?switchboard\b", line):
                    continue
                line = re.sub(r"\[(--[^\]]+)\]", r"\1", line)
                argv = [_PLACEHOLDERS.get(a, a) for a in shlex.split(line)]
                if ">" in argv:  # stdout redirected to a file: a file the command writes
                    i = argv.index(">")
                    argv = [*argv[:i], "--stdout-file", argv[i + 1]]
                argv[0] = "switchboard"
                out.append(Command(doc.name, line, tuple(argv), m.group("tag") or ""))
    return out


COMMANDS = _commands()


def test_docs_have_commands() -> None:
    assert len(COMMANDS) >= 15
    assert any(c.tag == "run" for c in COMMANDS)


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.tag != "skip"], ids=str)
def test_documented_command_parses(cmd: Command) -> None:
    from bandit.cli import build_parser

    argv = list(cmd.argv[1:])
    if "--stdout-file" in argv:
        argv = argv[: argv.index("--stdout-file")]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{cmd} does not parse (exit {exc.code})")
    assert getattr(args, "func", None) is not None, f"{cmd}: no such command"


def _flag_values(cmd: Command, flags: tuple[str, ...]) -> list[str]:
    argv = list(cmd.argv)
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in flags]


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if _flag_values(c, _READS)], ids=str)
def test_documented_input_files_exist(cmd: Command) -> None:
    for path in _flag_values(cmd, _READS):
        assert (ROOT / path).is_file(), f"{cmd}: {path} is not in the repository"


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if _flag_values(c, _WRITES)], ids=str)
def test_files_written_by_documented_commands_are_git_ignored(cmd: Command) -> None:
    for path in _flag_values(cmd, _WRITES):
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


@pytest.mark.slow
def test_runnable_documented_commands_succeed(tmp_path: Path) -> None:
    """The blocks tagged ``run``, executed in order as written (no services needed)."""
    for name in ("switchboard.toml", "arms.json"):
        shutil.copy(ROOT / name, tmp_path / name)
    runnable = [c for c in COMMANDS if c.tag == "run"]
    for cmd in runnable:
        assert "--stdout-file" not in cmd.argv, f"{cmd}: redirections are not run"
        proc = subprocess.run([sys.executable, "-m", "bandit.cli", *cmd.argv[1:]], cwd=tmp_path,
                              capture_output=True, text=True, timeout=900,
                              env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, f"{cmd} failed:\n{proc.stderr[-2000:]}"
