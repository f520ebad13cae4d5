"""``switchboard --help`` registers every sub-command without the scientific stack.

Each plugin's ``register`` runs for the top-level help; heavy modules belong inside the
command functions, or listing the commands costs seconds of imports on a loaded machine.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

HEAVY = ("numpy", "scipy", "pandas", "pyarrow", "torch", "streamlit", "sklearn",
         "statsmodels", "chdb", "clickhouse_connect", "kafka", "fastapi", "numba", "llvmlite")


def test_top_level_help_registers_every_command_without_heavy_imports() -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "bandit.cli", "--help"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    commands = {ep.name for ep in entry_points(group="switchboard.commands")}
    assert {"demo", "simulate", "replay", "evaluate", "serve", "learn"} <= commands
    listed = {line.split()[0] for line in proc.stdout.splitlines()
              if line.startswith("    ") and line.split()}
    assert commands <= listed, f"not in --help: {sorted(commands - listed)}"
    # -X importtime: "import time: self | cumulative | <indent>module" per first import
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:") and line.count("|") == 2}
    assert "bandit.cli" in imported
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert not heavy, f"registration imported {heavy[:10]}"
