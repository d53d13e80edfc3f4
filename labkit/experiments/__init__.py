"""Experiments: the load driver, grids of runs, the throughput model, ceilings, probing an app."""
