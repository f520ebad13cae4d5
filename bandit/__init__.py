"""Switchboard core: arms, sufficient statistics, policies, rewards, snapshots, stats.

Importing ``bandit`` is cheap: torch and Vowpal Wabbit live behind adapter modules.
"""

__version__ = "0.1.0"
