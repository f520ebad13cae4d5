"""Adapters to heavy optional libraries (Vowpal Wabbit, torch), imported lazily.

``import bandit`` never imports them; :func:`bandit.policies.make_policy` imports
:mod:`bandit.adapters.vw` only when ``policy.name = "vw"``.
"""
