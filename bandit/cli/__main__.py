"""``python -m bandit.cli``: the ``switchboard`` command (what the demo's services run)."""

from bandit.cli import main

raise SystemExit(main())
