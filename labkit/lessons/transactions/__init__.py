"""Notebook 09's apps and experiments: transactions, lost updates, isolation levels, row locks,
and the shop app's test suite run under pytest.
"""
