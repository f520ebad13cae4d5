"""``switchboard COMMAND`` loads only that command's plugin; the top-level help lists all."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from bandit.cli import GROUP, _command_of, build_parser, subparsers

ALL = {ep.name for ep in entry_points(group=GROUP)}


@pytest.mark.parametrize(("argv", "want"), [
    ([], None),
    (["--help"], None),
    (["-h", "serve"], None),
    (["serve", "--help"], "serve"),
    (["--config", "x.toml", "lift", "--json"], "lift"),
    (["--config=x.toml", "arms", "list"], "arms"),
    (["nosuch"], "nosuch"),
])
def test_command_of(argv: list[str], want: str | None) -> None:
    assert _command_of(argv) == want


def test_a_command_loads_only_its_plugin_and_the_help_all() -> None:
    assert set(subparsers(build_parser("serve"))) == {"serve"}
    assert set(subparsers(build_parser())) == ALL
    # a name that is no command: every plugin, so argparse can list the valid ones
    assert set(subparsers(build_parser("nosuch"))) == ALL


def test_a_command_does_not_import_the_others() -> None:
    # simulations (numpy, scipy) is another plugin's package: `switchboard lift --help`
    # must not import it, nor pandas/scipy for lift's own options
    code = ("import sys; from bandit.cli import main\n"
            "try:\n    main(['lift', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('simulations', 'pandas', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
