"""Adapters to libraries outside the core: context encoders and heavy optional libraries.

:mod:`~bandit.adapters.encoders` (hashing encoder, projections), :mod:`~bandit.adapters.minilm`
(the bundled all-MiniLM-L6-v2 sentence encoder, torch) and :mod:`~bandit.adapters.vw` (the
Vowpal Wabbit policy). The core never imports this package: ``vw`` is found by
:func:`bandit.policies.make_policy` through the ``switchboard.policies`` entry point, and
heavy libraries are imported only when used.
"""
