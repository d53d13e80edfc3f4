"""The bench: the load driver, calibration, the grid of points, the throughput model, and the
results they return (each with `to_frame()`).
"""
