"""Helpers for tests, benchmarks and the demo: synthetic data with a known ground truth.

:mod:`~bandit.testing.synthetic` generates cohorts and event tables for the store. Nothing
in the serving or learning path imports this package.
"""
