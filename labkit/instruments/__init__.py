"""What the lab attaches from outside to any app: the session ledger, simulated latency,
``Server-Timing``, loop-lag, pool and thread gauges, SQL capture."""
