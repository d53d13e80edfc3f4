"""Notebook 09's apps and experiments: transactions, lost updates, isolation levels, row locks,
and the learner's test suite run under pytest.
"""
