"""Notebook 05's experiments (and 07's, which reuses them): what one request costs at most,
worker threads, pool stalls, and the two ways out of a pool deadlock.
"""
