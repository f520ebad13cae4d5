"""Analysis over the store: the experiment read-outs built on :mod:`bandit.stats`.

What belongs here: functions that take a store and return numbers or DataFrames
(:mod:`~bandit.analysis.lift`: lift, guardrails, sample-ratio health). No argument parsing
or printing (that is :mod:`bandit.cli`), no SQL of their own (that is :mod:`bandit.store`).
"""
